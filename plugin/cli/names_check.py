"""The Names line of `status`: whether containers of this host can resolve
the containers of other hosts, and what to set when they cannot.

dockerd up to 27 asks the host's non-loopback nameservers from inside the
container, where the agent intercepts the question: nothing to set.  From
28 on it asks the host's nameservers from the host's own namespace, and
only daemon.json `dns` servers from the container: names then need
169.254.1.1 (the agent's responder on every container's gateway) there.

Which daemon.json: the one the local dockerd reads, as its command line
says (`--config-file`, default /etc/docker/daemon.json; `--dns` flags
count too), dockerd being the process that listens on DOCKER_HOST's unix
socket (its peer credentials), else the only dockerd running.
"""

import json
import os
import re
import socket
import struct
import time

from agent.names import upstreams
from agent.names.health import responder_health
from driver.docker_api import DockerApi
from driver.errors import DockerUnavailable

DAEMON_JSON = upstreams.DAEMON_JSON
GATEWAY = upstreams.GATEWAY
HOST_NETNS_FROM = 28  # the first dockerd that asks the host's nameservers from the host


def names_status(agent, docker_host: str, daemon_json: str | None = None) -> dict:
    """The Names part of `status`; daemon_json None: the local dockerd's."""
    if not agent.names:
        return {"enabled": False}
    status = {"enabled": True}
    try:
        with open(agent.names_status_path) as f:
            status.update(json.load(f))
    except FileNotFoundError:
        status["running"] = False
    except (OSError, ValueError) as exc:
        status["error"] = f"{agent.names_status_path}: {exc}"
    status["responder"] = responder_health(agent.names_health_path)
    status["intercepted"] = status["responder"]["intercepted"]
    try:
        status["dockerd"] = DockerApi(docker_host, timeout=2.0).server_version()
    except DockerUnavailable as exc:
        status["dockerdError"] = str(exc)
    flags = []
    if daemon_json is None:
        daemon_json, flags = dockerd_dns_settings(docker_host)
    status["daemonJson"] = daemon_json
    status["daemonDns"] = flags or _daemon_dns(daemon_json)
    status["advice"] = advice(status.get("dockerd"), status["daemonDns"], daemon_json)
    return status


def advice(version: str | None, daemon_dns: list[str],
           daemon_json: str = DAEMON_JSON) -> str | None:
    """What to set for names to work on this dockerd, or None."""
    major = _major(version)
    if major is None or major < HOST_NETNS_FROM or GATEWAY in daemon_dns:
        return None
    return (f"dockerd {version} asks the host's nameservers from the host, where the agent "
            f'cannot answer: add "dns": ["{GATEWAY}", <your nameservers>] to {daemon_json} '
            "and restart dockerd (scripts/quickstart.sh does it)")


def dockerd_dns_settings(docker_host: str) -> tuple[str, list[str]]:
    """(the daemon.json the local dockerd reads, its --dns flags), from its
    command line; (DAEMON_JSON, []) when no local dockerd is found."""
    pid = _peer_pid(docker_host) if docker_host.startswith("unix://") else None
    if pid is None or _comm(pid) != "dockerd":
        found = [p for p in _pids() if _comm(p) == "dockerd"]
        pid = found[0] if len(found) == 1 else None
    found = _argv_of(pid) if pid is not None else None
    return parse_dockerd_argv(*found) if found else (DAEMON_JSON, [])


def parse_dockerd_argv(argv: list[str], cwd: str = "/") -> tuple[str, list[str]]:
    """--config-file (or DAEMON_JSON) and the --dns values of dockerd's argv."""
    config, dns = DAEMON_JSON, []
    args = iter(argv[1:])
    for arg in args:
        name, eq, value = arg.partition("=")
        if name not in ("--config-file", "--dns"):
            continue
        if not eq:
            value = next(args, "")
        if name == "--dns":
            dns.append(value)
        elif value:
            config = os.path.join(cwd, value)
    return config, dns


def _argv_of(pid: int) -> tuple[list[str], str] | None:
    """(argv, working directory) of process pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:  # another user's process: only root may look
        cwd = "/"
    return argv, cwd


def _peer_pid(docker_host: str) -> int | None:
    """The pid of the process listening on the unix socket (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(docker_host[len("unix://"):])
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                    struct.calcsize("3i"))
        except OSError:
            return None
    pid = struct.unpack("3i", creds)[0]
    return pid or None


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def line(status: dict) -> str:
    if not status.get("enabled"):
        return "off (CALICO_LIBNETWORK_DNS=false)"
    if "error" in status:
        return f"unknown ({status['error']})"
    if status.get("running") is False:
        return "not answering yet (is the node agent running?)"
    if stuck(status):
        return f"NOT ANSWERING: {stuck(status)}"
    where = ", ".join(status.get("listening") or []) or "nothing"
    intercepted = ", ".join(status.get("intercepted") or []) or "none"
    text = f"answering on {where}; questions to {intercepted} intercepted"
    if status.get("advice"):
        text += "; NOT reachable from containers on this dockerd (see warning)"
    return text


def stuck(status: dict) -> str | None:
    """What a responder that does not answer costs, and what to do; None
    when it answers (or no watchdog looks: no agent, names off)."""
    health = status.get("responder") or {}
    if health.get("answering") is not False:
        return None
    since = time.strftime("%H:%M:%S", time.localtime(health.get("since") or 0))
    return (f"the agent's DNS responder has not answered since {since} (the agent is stuck: "
            "restart the plugin); containers' questions go straight to their nameservers "
            "meanwhile, so names of other hosts' containers do not resolve")


def _daemon_dns(path: str) -> list[str]:
    try:
        with open(path) as f:
            return list(json.load(f).get("dns") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _major(version: str | None) -> int | None:
    match = re.match(r"(\d+)\.", version or "")
    return int(match.group(1)) if match else None
