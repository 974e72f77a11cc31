#!/usr/bin/env bash
# Newer Docker engines for the lab, from newer Debian suites, without
# installing them: `apt-get download` with an apt state of its own, then
# `dpkg-deb -x` into a folder per engine major version:
#
#   bash scripts/docker-versions.sh [MAJOR...]     (as root; default: 26)
#
#   26  Debian 13 (trixie, trixie-updates, trixie-security): docker.io and
#       docker-cli 26.1, docker-compose 2.26
#   28  Debian unstable (sid): docker.io and docker-cli 28.5, docker-compose 2.40
#
# Each lands in $LAB_DOCKER_CACHE/docker-MAJOR (default
# /opt/calico-libnetwork-test/docker-MAJOR): usr/sbin/dockerd, usr/bin/docker,
# usr/libexec/docker/cli-plugins/docker-compose. Tests pick one with
# LAB_DOCKER=MAJOR (tests/lab/dockerd.py). Debian 12's containerd and runc stay
# (Debian 13's runc needs glibc 2.38); these dockerd find them on PATH.
# Idempotent: a folder that is complete is left alone (remove it to refresh).
# Run it, or source it.

_calico_docker_versions() (  # a subshell, like deps.sh
    set -euo pipefail
    cache=${LAB_DOCKER_CACHE:-/opt/calico-libnetwork-test}
    [ $# -gt 0 ] || set -- 26

    ready() { echo "docker-versions: docker $major ready in $dest ($(cat "$dest/.complete"))"; }
    for major in "$@"; do
        dest=$cache/docker-$major
        if [ -e "$dest/.complete" ]; then
            ready
            continue
        fi
        case $major in
            26) suite=trixie ;;
            28) suite=sid ;;
            *) echo "docker-versions: no Debian suite known for docker $major (26, 28)" >&2
               exit 2 ;;
        esac
        [ "$(id -u)" = 0 ] || { echo "docker-versions: need root to write $cache" >&2; exit 1; }
        mkdir -p "$cache"
        exec 9>"$cache/.lock"
        flock 9  # another run fetching the same engine: wait for it
        [ ! -e "$dest/.complete" ] || { flock -u 9; ready; continue; }

        # apt's own state for that suite: its lists, caches and sources, so
        # the system's apt never sees the newer suite.
        apt_dir=$cache/apt-$suite
        mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources"
        _sources_for "$suite" >"$apt_dir/sources/debian.sources"
        apt=(apt-get -q -o "Dir::State=$apt_dir" -o "Dir::State::Lists=$apt_dir/lists"
             -o "Dir::Cache=$apt_dir/cache" -o "Dir::Etc::SourceList=/dev/null"
             -o "Dir::Etc::SourceParts=$apt_dir/sources" -o "Dir::Etc::Preferences=/dev/null"
             -o "Dir::Etc::PreferencesParts=/dev/null" -o "APT::Sandbox::User=root")
        echo "docker-versions: apt-get update ($suite, apt state in $apt_dir)"
        "${apt[@]}" update -qq

        work=$(mktemp -d "$cache/.docker-$major.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        echo "docker-versions: apt-get download docker.io docker-cli docker-compose ($suite)"
        (cd "$work" && "${apt[@]}" download -qq docker.io docker-cli docker-compose)
        mkdir "$work/root"
        for deb in "$work"/*.deb; do
            dpkg-deb -x "$deb" "$work/root"
        done
        version=$("$work/root/usr/sbin/dockerd" --version)
        "$work/root/usr/bin/docker" --version >/dev/null
        case $version in
            "Docker version $major."*) ;;
            *) echo "docker-versions: $suite gave '$version', not docker $major" >&2; exit 1 ;;
        esac
        compose=$("$work/root/usr/libexec/docker/cli-plugins/docker-compose" version --short)
        printf '%s; compose %s; from %s\n' "$version" "$compose" \
            "$(cd "$work" && echo *.deb)" >"$work/root/.complete"
        rm -rf "$dest"
        mv "$work/root" "$dest"
        rm -rf "$work"
        trap - EXIT
        flock -u 9
        ready
    done
)

# The system's Debian 12 sources (deb822 or one-line, keeping their mirrors
# and keyrings) with their suites renamed: bookworm* -> trixie* for trixie;
# for sid only the main archive's bookworm -> sid (no -updates/-security).
_sources_for() {
    python3 -I - "$1" <<'EOF'
import glob, re, sys

target = sys.argv[1]

def rename(suites):
    out = []
    for s in suites:
        m = re.fullmatch(r"bookworm(-[a-z]+)?", s)
        if not m:
            continue
        if target == "sid":
            if not m.group(1):
                out.append("sid")
        else:
            out.append(target + (m.group(1) or ""))
    return out

entries = []  # (uris, suites, components, signed_by)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        entries.append((fields.get("uris", "").split(), fields.get("suites", "").split(),
                        fields.get("components", "main"), fields.get("signed-by")))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"\s*deb\s+(\[[^]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line.split("#")[0])
        if m:
            signed = re.search(r"signed-by=(\S+?)[\s\]]", m.group(1) or "")
            entries.append(([m.group(2)], [m.group(3)], m.group(4).strip(),
                            signed.group(1) if signed else None))

stanzas = []
for uris, suites, components, signed_by in entries:
    renamed = rename(suites)
    if uris and renamed:
        stanza = (f"Types: deb\nURIs: {' '.join(uris)}\nSuites: {' '.join(renamed)}\n"
                  f"Components: {components}\n")
        stanzas.append(stanza + (f"Signed-By: {signed_by}\n" if signed_by else ""))
if not stanzas:  # no Debian 12 sources found: the official mirror
    stanzas.append(f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {target}\n"
                   "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
print("\n".join(stanzas), end="")
EOF
}

_calico_docker_versions "$@"
