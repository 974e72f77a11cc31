"""The Names line of `status`: whether containers of this host can resolve
the containers of other hosts, and what to set when they cannot.

dockerd up to 27 asks the host's non-loopback nameservers from inside the
container, where the agent intercepts the question: nothing to set.  From
28 on it asks the host's nameservers from the host's own namespace, and
only daemon.json `dns` servers from the container: names then need
169.254.1.1 (the agent's responder on every container's gateway) there.
"""

import json
import re

from agent.names import upstreams
from driver.docker_api import DockerApi
from driver.errors import DockerUnavailable

DAEMON_JSON = "/etc/docker/daemon.json"
GATEWAY = upstreams.GATEWAY
HOST_NETNS_FROM = 28  # the first dockerd that asks the host's nameservers from the host


def names_status(agent, docker_host: str, daemon_json: str = DAEMON_JSON) -> dict:
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
    try:
        status["dockerd"] = DockerApi(docker_host, timeout=2.0).server_version()
    except DockerUnavailable as exc:
        status["dockerdError"] = str(exc)
    status["daemonDns"] = _daemon_dns(daemon_json)
    status["advice"] = advice(status.get("dockerd"), status["daemonDns"])
    return status


def advice(version: str | None, daemon_dns: list[str]) -> str | None:
    """What to set for names to work on this dockerd, or None."""
    major = _major(version)
    if major is None or major < HOST_NETNS_FROM or GATEWAY in daemon_dns:
        return None
    return (f"dockerd {version} asks the host's nameservers from the host, where the agent "
            f'cannot answer: add "dns": ["{GATEWAY}", <your nameservers>] to {DAEMON_JSON} '
            "and restart dockerd (scripts/quickstart.sh does it)")


def line(status: dict) -> str:
    if not status.get("enabled"):
        return "off (CALICO_LIBNETWORK_DNS=false)"
    if "error" in status:
        return f"unknown ({status['error']})"
    if status.get("running") is False:
        return "not answering yet (is the node agent running?)"
    where = ", ".join(status.get("listening") or []) or "nothing"
    intercepted = ", ".join(status.get("intercepted") or []) or "none"
    text = f"answering on {where}; questions to {intercepted} intercepted"
    if status.get("advice"):
        text += "; NOT reachable from containers on this dockerd (see warning)"
    return text


def _daemon_dns(path: str) -> list[str]:
    try:
        with open(path) as f:
            return list(json.load(f).get("dns") or [])
    except (OSError, ValueError, AttributeError):
        return []


def _major(version: str | None) -> int | None:
    match = re.match(r"(\d+)\.", version or "")
    return int(match.group(1)) if match else None
