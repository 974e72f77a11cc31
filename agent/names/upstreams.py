"""The nameservers Docker's embedded resolver forwards to: those of the
host's resolv.conf, read as dockerd reads it (a file whose only nameserver
is systemd-resolved's 127.0.0.53 stub means /run/systemd/resolve/resolv.conf)."""

import ipaddress
import json

RESOLV_CONF = "/etc/resolv.conf"
DAEMON_JSON = "/etc/docker/daemon.json"
GATEWAY = "169.254.1.1"
GATEWAY6 = "fe80::1"  # every container's IPv6 gateway, as 169.254.1.1 is its IPv4 one
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
MAX_SERVERS = 3  # Docker tries up to 3 upstreams


def nameservers(path: str = RESOLV_CONF) -> list[str]:
    servers = _read(path)
    if servers == ["127.0.0.53"]:
        servers = _read(SYSTEMD_RESOLV_CONF) or servers
    return servers


def behind_gateway(daemon_json: str = DAEMON_JSON, resolv_conf: str = RESOLV_CONF) -> list[str]:
    """Where questions asked of 169.254.1.1 go: the servers daemon.json
    `dns` lists after it (dockerd asks them only when we fail), else the
    host's nameservers, which dockerd 28+ asks when daemon.json names none."""
    try:
        with open(daemon_json) as f:
            listed = [str(s) for s in json.load(f).get("dns") or ()]
    except (OSError, ValueError, AttributeError):
        listed = []
    if GATEWAY in listed:
        after = [s for s in listed[listed.index(GATEWAY) + 1:] if _is_address(s)]
        if after:
            return after[:MAX_SERVERS]
    return nameservers(resolv_conf)[:MAX_SERVERS]


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def intercepted(servers: list[str]) -> list[str]:
    """The ones dockerd up to 27 asks from inside the container, so that the
    question crosses the cali veth: neither loopback (asked from the host's
    namespace) nor link-local (not reachable from a container), IPv4 and
    IPv6 alike (IPv6 ones by a container with IPv6).  Docker tries the first
    three of the file, and the first three of either family."""
    found = [s for s in servers if _routed(s)]
    return ([s for s in found if ":" not in s][:MAX_SERVERS]
            + [s for s in found if ":" in s][:MAX_SERVERS])


def fallback(servers: list[str]) -> str | None:
    """Where questions asked of 169.254.1.1 go while the responder does not
    answer: the first of its upstreams a container's packet can be sent to
    (IPv4, neither loopback nor link-local), if any."""
    return next((s for s in servers if ":" not in s and _routed(s)), None)


def _routed(server: str) -> bool:
    address = ipaddress.ip_address(server)
    return not (address.is_loopback or address.is_link_local)


def _read(path: str) -> list[str]:
    servers = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    address = fields[1].split("%")[0]
                    if _is_address(address) and address not in servers:
                        servers.append(address)
    except OSError:
        return []
    return servers
