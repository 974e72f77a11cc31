#!/usr/bin/env bash
# Quick start: install everything and run the plugin on this Debian 12 host.
#
#   bash scripts/quickstart.sh          install, start etcd (if ETCD_ENDPOINTS
#                                       is unset), the plugin and dockerd
#   bash scripts/quickstart.sh stop     stop what a run without systemd started
# as root (a user with sudo: sudo bash scripts/quickstart.sh).
#
# Settings come from the environment (see README: Configuration) and are saved
# in /etc/calico-libnetwork/env for the service.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/calico-libnetwork
ETC=/etc/calico-libnetwork
RUN=/run/calico-libnetwork
LOGS=/var/log/calico-libnetwork
ETCD_DATA=/var/lib/calico-libnetwork/etcd

say() { echo "==> $*"; }
die() { echo "quickstart: $*" >&2; exit 1; }
have_systemd() { [ -d /run/systemd/system ]; }

# Start a daemon in the background (no systemd here), remembering its pid.
start_bg() {
    local name=$1; shift
    mkdir -p "$RUN" "$LOGS"
    setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

stop_bg() {
    local pidfile="$RUN/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid; pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "$what did not come up within ${seconds}s; see $LOGS/"
}

if [ "${1:-}" = "stop" ]; then
    stop_bg dockerd; stop_bg calico-libnetwork; stop_bg etcd
    say "stopped"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "run me as root (bash $0 in a root shell, or sudo bash $0)"

say "installing Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq docker.io etcd-server etcd-client iptables nftables iproute2 python3-venv >/dev/null
# BIRD 2 for CALICO_NETWORKING_BACKEND=bird: the node agent runs it itself, and
# stays off while another BIRD runs, so Debian's own BIRD service must not
# start (policy-rc.d) nor start at boot. A bird2 installed before is left as it is.
if ! dpkg-query -W -f='${Status}' bird2 2>/dev/null | grep -q "ok installed"; then
    policy=/usr/sbin/policy-rc.d ours=false
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        ours=true
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get install -y -qq bird2 >/dev/null
    if [ "$ours" = true ]; then rm -f "$policy"; trap - EXIT; fi
    if have_systemd; then systemctl disable bird.service >/dev/null 2>&1 || true; fi
fi

say "installing calico-libnetwork into $PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade "$REPO"
ln -sf "$PREFIX/venv/bin/calico-libnetwork" /usr/local/bin/calico-libnetwork

etcd_healthy() { ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint health --dial-timeout=1s; }
if [ -z "${ETCD_ENDPOINTS:-}" ]; then
    export ETCD_ENDPOINTS=http://127.0.0.1:2379
    if ! etcd_healthy "$ETCD_ENDPOINTS" >/dev/null 2>&1; then
        if have_systemd; then
            say "starting Debian's etcd service (data in /var/lib/etcd)"
            systemctl enable --now etcd
        else
            say "starting a local etcd on 127.0.0.1:2379 (data in $ETCD_DATA)"
            mkdir -p "$ETCD_DATA"
            start_bg etcd env -u ETCD_ENDPOINTS etcd --name "$(hostname)" --data-dir "$ETCD_DATA" \
                --listen-client-urls http://127.0.0.1:2379 \
                --advertise-client-urls http://127.0.0.1:2379 \
                --listen-peer-urls http://127.0.0.1:2380
        fi
        wait_for 30 "etcd" etcd_healthy "$ETCD_ENDPOINTS"
    fi
fi

say "saving settings in $ETC/env"
mkdir -p "$ETC"
env | grep -E '^(ETCD_|NODENAME=|IP=|IP_AUTODETECTION_METHOD=|CALICO_|NO_DEFAULT_POOLS=|DOCKER_HOST=)' \
    | sort > "$ETC/env"
chmod 600 "$ETC/env"

sockets_up() { [ -S /run/docker/plugins/calico.sock ] && [ -S /run/docker/plugins/calico-ipam.sock ]; }
if have_systemd; then
    say "installing and starting calico-libnetwork.service"
    install -m 644 "$REPO/packaging/calico-libnetwork.service" /etc/systemd/system/
    systemctl daemon-reload
    systemctl enable calico-libnetwork
    systemctl restart calico-libnetwork
else
    say "starting calico-libnetwork run (log in $LOGS/calico-libnetwork.log)"
    stop_bg calico-libnetwork
    # shellcheck disable=SC2046
    start_bg calico-libnetwork env $(cat "$ETC/env") /usr/local/bin/calico-libnetwork run
fi
wait_for 30 "the plugin sockets" sockets_up

# Names across hosts (README, "Names across hosts"): dockerd 28 and later ask
# the host's nameservers from the host's namespace, where the node agent
# cannot see the question; only daemon.json `dns` servers are asked from the
# container. So there 169.254.1.1 (the agent, on every container's gateway)
# goes first, merged with what daemon.json has (else the host's non-loopback
# nameservers, which dockerd then asks when 169.254.1.1 does not answer).
docker_major=$(dockerd --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
if [ "${docker_major:-0}" -ge 28 ]; then
    mkdir -p /etc/docker
    if python3 -I - /etc/docker/daemon.json /etc/resolv.conf <<'PY'
import ipaddress, json, os, sys
path, resolv = sys.argv[1:]
config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
dns = [str(s) for s in config.get("dns") or []]
if not dns:
    for line in open(resolv):
        f = line.split()
        if len(f) > 1 and f[0] == "nameserver" and not ipaddress.ip_address(
                f[1].split("%")[0]).is_loopback:
            dns.append(f[1])
if dns[:1] == ["169.254.1.1"]:
    sys.exit(1)  # already there: nothing changed
config["dns"] = ["169.254.1.1"] + [s for s in dns if s != "169.254.1.1"]
with open(path + ".tmp", "w") as f:
    json.dump(config, f, indent=2)
os.replace(path + ".tmp", path)
PY
    then
        say "dockerd $docker_major: /etc/docker/daemon.json dns now starts with 169.254.1.1 (names across hosts)"
        if docker info >/dev/null 2>&1; then
            if have_systemd; then systemctl restart docker; else stop_bg dockerd; fi
            docker info >/dev/null 2>&1 && [ ! -f "$RUN/dockerd.pid" ] && ! have_systemd \
                && say "restart dockerd to apply it (it was not started by this script)"
        fi
    fi
fi

if ! docker info >/dev/null 2>&1; then
    if have_systemd; then
        systemctl enable --now docker
    else
        say "starting dockerd (log in $LOGS/dockerd.log)"
        start_bg dockerd dockerd
    fi
    wait_for 60 "dockerd" docker info
fi

say "ready. Try:"
echo "    docker network create --driver calico --ipam-driver calico-ipam net1"
echo "    docker run --net net1 --name workload-A -tid busybox"
