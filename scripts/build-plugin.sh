#!/usr/bin/env bash
# Build calico-libnetwork as a Docker managed plugin (v2), as root:
#
#   bash scripts/build-plugin.sh [options] [OUTDIR]
#
#   --base IMAGE         base image with python3 (3.11) + venv
#                        (default python:3.11-slim-bookworm)
#   --docker-host URL    dockerd to build in and create the plugin in
#                        (default: $DOCKER_HOST, else dockerd's default socket)
#   --name NAME          plugin name (default calico: the plugin is calico:latest,
#                        the name users pass to --driver and --ipam-driver)
#   --image TAG          tag of the intermediate image (default calico-libnetwork:latest)
#   --python PY          Python that runs `pip wheel` (default .venv/bin/python,
#                        else python3); its version must be the base's (3.11)
#   --no-debs            do not ship iptables' .deb files; the image build then
#                        installs iptables from the base's apt mirror if missing
#   --no-create          stop after writing OUTDIR (config.json + rootfs/)
#   --replace            disable and remove an existing plugin NAME:latest first
#   OUTDIR               plugin directory to write (default build/plugin)
#
# Steps: wheels of the project and its pinned dependencies are built on this
# host (PyPI) into a temporary context, with iptables' Debian packages
# (apt-get download) when this host runs the base's Debian release; the
# image build needs no network. Then the image becomes OUTDIR/rootfs
# (docker create + export), config.json is copied beside it, and
# `docker plugin create NAME OUTDIR` registers it (disabled). Next:
#   docker plugin set calico:latest ETCD_ENDPOINTS=http://10.0.0.1:2379
#   docker plugin enable calico:latest
#   docker network create -d calico:latest --ipam-driver calico:latest net1
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKER=/usr/bin/docker  # Debian's 20.10 client (/usr/local/bin/docker is another one)
BASE=python:3.11-slim-bookworm
BASE_SUITE=bookworm      # the Debian release of both supported bases
PY_VERSION=3.11          # the Python of both supported bases
NAME=calico
IMAGE=calico-libnetwork:latest
PYTHON=
OUTDIR=
DEBS=true
CREATE=true
REPLACE=false

die() { echo "build-plugin: $*" >&2; exit 1; }
say() { echo "build-plugin: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE=${2:?--base needs an image}; shift 2 ;;
        --docker-host) export DOCKER_HOST=${2:?--docker-host needs a URL}; shift 2 ;;
        --name) NAME=${2:?--name needs a name}; shift 2 ;;
        --image) IMAGE=${2:?--image needs a tag}; shift 2 ;;
        --python) PYTHON=${2:?--python needs a path}; shift 2 ;;
        --no-debs) DEBS=false; shift ;;
        --no-create) CREATE=false; shift ;;
        --replace) REPLACE=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) [ -z "$OUTDIR" ] || die "one OUTDIR only"; OUTDIR=$1; shift ;;
    esac
done
OUTDIR=${OUTDIR:-$REPO/build/plugin}
NAME=${NAME%:latest}
[ -x "$DOCKER" ] || die "$DOCKER not found (apt-get install docker.io)"
if [ -z "$PYTHON" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
    || die "cannot run $PYTHON"
[ "$have" = "$PY_VERSION" ] || die "$PYTHON is Python $have, the base has $PY_VERSION:" \
    "its wheels would not install there; pass --python with a $PY_VERSION"
docker() { "$DOCKER" "$@"; }

CTX=$(mktemp -d /tmp/calico-plugin-build.XXXXXX)
CID=
cleanup() {
    [ -z "$CID" ] || docker rm -f "$CID" >/dev/null 2>&1 || true
    rm -rf "$CTX"
}
trap cleanup EXIT

# 1. Wheels, from a copy of the sources (the build writes build/ and
#    *.egg-info next to them; the work tree stays as it is).
t0=$SECONDS
say "wheels for Python $PY_VERSION with $PYTHON"
mkdir -p "$CTX/src" "$CTX/wheels" "$CTX/debs"
for item in pyproject.toml README.md plugin ipam driver datastore kernel agent; do
    [ -e "$REPO/$item" ] && cp -r "$REPO/$item" "$CTX/src/"
done
find "$CTX/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip wheel -q --disable-pip-version-check -w "$CTX/wheels" "$CTX/src" \
    || die "pip wheel failed"
rm -rf "$CTX/src"
say "$(ls "$CTX/wheels" | wc -l) wheels in $((SECONDS - t0)) s"

# 2. iptables, nftables, bird2 and their libraries as .deb files, if this host runs the same
#    Debian release as the base (else the image build uses apt itself).
download_debs() {
    command -v apt-get >/dev/null || { say "no apt-get: iptables comes from the base's mirror"; return 0; }
    local codename
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$codename" != "$BASE_SUITE" ]; then
        say "this host runs '$codename', not $BASE_SUITE: iptables comes from the base's mirror"
        return 0
    fi
    local pkgs
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
               --no-breaks --no-replaces --no-enhances iptables nftables bird2 2>/dev/null \
           | grep -v '^[ <]' | sort -u)
    [ -n "$pkgs" ] || { say "apt-cache knows no iptables (run apt-get update)"; return 0; }
    # shellcheck disable=SC2086
    if ! (cd "$CTX/debs" && apt-get download -qq -o APT::Sandbox::User=root $pkgs >/dev/null 2>&1); then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq
            # shellcheck disable=SC2086
            (cd "$CTX/debs" && apt-get download -qq -o APT::Sandbox::User=root $pkgs >/dev/null) \
                || die "apt-get download of iptables' packages failed"
        else
            die "apt-get download failed; run apt-get update, or pass --no-debs"
        fi
    fi
    say "$(ls "$CTX/debs" | wc -l) .deb files (iptables, nftables, bird2 and what they need)"
}
[ "$DEBS" = true ] && download_debs

# 3. The image.
t0=$SECONDS
cp "$REPO/Dockerfile" "$CTX/Dockerfile"
say "docker build --build-arg BASE=$BASE -t $IMAGE"
docker build -q --build-arg "BASE=$BASE" -t "$IMAGE" "$CTX" >/dev/null \
    || die "docker build failed"
say "image $IMAGE built in $((SECONDS - t0)) s"

# 4. The plugin directory: config.json + rootfs/ (the image, flattened).
t0=$SECONDS
rm -rf "$OUTDIR/rootfs"
mkdir -p "$OUTDIR/rootfs"
CID=$(docker create "$IMAGE")
docker export "$CID" | tar -C "$OUTDIR/rootfs" --numeric-owner -xf -
docker rm "$CID" >/dev/null
CID=
cp "$REPO/config.json" "$OUTDIR/config.json"
[ -d "$OUTDIR/rootfs/run/docker/plugins" ] || die "rootfs has no /run/docker/plugins"
say "plugin directory $OUTDIR ($(du -sh "$OUTDIR/rootfs" | cut -f1) rootfs) in $((SECONDS - t0)) s"

# 5. The plugin.
[ "$CREATE" = true ] || exit 0
if docker plugin inspect "$NAME:latest" >/dev/null 2>&1; then
    [ "$REPLACE" = true ] || die "plugin $NAME:latest exists: pass --replace, or docker plugin rm it"
    docker plugin disable -f "$NAME:latest" >/dev/null 2>&1 || true
    docker plugin rm -f "$NAME:latest" >/dev/null
fi
docker plugin create "$NAME" "$OUTDIR" >/dev/null
say "created plugin $NAME:latest (disabled): docker plugin set $NAME:latest ETCD_ENDPOINTS=...;" \
    "docker plugin enable $NAME:latest"
