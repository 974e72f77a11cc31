"""The nameservers Docker's embedded resolver forwards to: those of the
host's resolv.conf, read as dockerd reads it (a file whose only nameserver
is systemd-resolved's 127.0.0.53 stub means /run/systemd/resolve/resolv.conf)."""

import ipaddress

RESOLV_CONF = "/etc/resolv.conf"
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
MAX_SERVERS = 3  # Docker tries up to 3 upstreams


def nameservers(path: str = RESOLV_CONF) -> list[str]:
    servers = _read(path)
    if servers == ["127.0.0.53"]:
        servers = _read(SYSTEMD_RESOLV_CONF) or servers
    return servers


def intercepted(servers: list[str]) -> list[str]:
    """The ones dockerd up to 27 asks from inside the container, so that the
    question crosses the cali veth: IPv4 and not loopback (loopback ones it
    asks from the host's namespace)."""
    return [s for s in servers if ipaddress.ip_address(s).version == 4
            and not ipaddress.ip_address(s).is_loopback][:MAX_SERVERS]


def _read(path: str) -> list[str]:
    servers = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    address = fields[1].split("%")[0]
                    try:
                        ipaddress.ip_address(address)
                    except ValueError:
                        continue
                    if address not in servers:
                        servers.append(address)
    except OSError:
        return []
    return servers
