"""`docker run -p` on a Calico network: the host ports an endpoint asks
for (CreateEndpoint's com.docker.network.portmap), checked and chosen here,
before its WorkloadEndpoint is written with them (datastore/ports.py).

dockerd sends the portmap only with the container's first non-internal
endpoint, and leaves the choice of a host port to the driver when the user
named none (`-P`, `-p 80`: HostPort 0) or a range (`-p 8080-8090:80`): as
Docker's bridge does, a free one is taken from the kernel's ephemeral range
(net.ipv4.ip_local_port_range), else the first free one of the range.  A
port is taken when another endpoint of this node publishes it or a process
of the host listens on it (docker-proxy for a bridge container, too)."""

from collections.abc import Iterable

from dataclasses import dataclass

import netaddr

from datastore.ports import PROTOCOLS, PortBinding
from driver.errors import DriverError

OPT_PORTMAP = "com.docker.network.portmap"
_PROTOCOL_NUMBERS = {6: "tcp", 17: "udp", 132: "sctp"}
_LOCAL_PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
_DOCKER_DEFAULT_RANGE = (49153, 60999)  # Docker's when the kernel's is unreadable


class InvalidPortMapping(DriverError):
    pass


class PortTaken(DriverError):
    pass


@dataclass(frozen=True, slots=True)
class Request:
    """One portmap entry: a host port, a range of them, or none (0) for one container port."""
    protocol: str
    port: int
    host_ip: str
    first: int  # 0: any host port
    last: int

    def binding(self, host_port: int) -> PortBinding:
        return PortBinding(self.protocol, host_port, self.port, self.host_ip)

    def __str__(self):
        asked = (f"{self.first}-{self.last}" if self.last != self.first else str(self.first)) \
            if self.first else "any port"
        return f"{asked}->{self.port}/{self.protocol}" + (f" on {self.host_ip}"
                                                         if self.host_ip else "")


def requests(options: dict) -> list[Request]:
    """The portmap of CreateEndpoint's options (InvalidPortMapping naming a bad entry)."""
    entries = options.get(OPT_PORTMAP) or []
    if not isinstance(entries, list):
        raise InvalidPortMapping(f"{OPT_PORTMAP} is not a list: {entries!r}")
    return [_request(entry) for entry in entries]


def _request(entry) -> Request:
    def bad(why):
        return InvalidPortMapping(f"cannot publish {entry!r}: {why}")
    if not isinstance(entry, dict):
        raise bad("not an object")
    proto = entry.get("Proto", 6)
    protocol = _PROTOCOL_NUMBERS.get(proto) if isinstance(proto, int) else \
        (proto.lower() if isinstance(proto, str) and proto.lower() in PROTOCOLS else None)
    if protocol is None:
        raise bad(f"protocol {proto!r} is none of {', '.join(PROTOCOLS)}")
    numbers = {}
    for field in ("Port", "HostPort", "HostPortEnd"):
        value = entry.get(field) or 0
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536:
            raise bad(f"{field} {value!r} is not a port number")
        numbers[field] = value
    if not numbers["Port"]:
        raise bad("no container port")
    first, last = numbers["HostPort"], numbers["HostPortEnd"] or numbers["HostPort"]
    if last < first or (last and not first):
        raise bad(f"host ports {first}-{last} are not a range")
    host_ip = entry.get("HostIP") or ""
    if host_ip:
        try:
            host_ip = str(netaddr.IPAddress(host_ip, flags=netaddr.INET_PTON))
        except (netaddr.AddrFormatError, TypeError, ValueError):
            raise bad(f"HostIP {host_ip!r} is not an IP address") from None
    return Request(protocol, numbers["Port"], host_ip, first, last)


def assign(asked: Iterable[Request], published: Iterable[PortBinding]) -> list[PortBinding]:
    """A host port for each request, none of them taken by `published` (the
    other endpoints' bindings on this host), by each other or by a listening
    process; PortTaken naming the port (or range) otherwise."""
    taken = list(published)
    chosen = []
    sockets = {}  # protocol -> its bound sockets, read once for all candidates
    for request in asked:
        if request.protocol not in sockets:
            sockets[request.protocol] = list(_bound(request.protocol))
        candidates = (range(request.first, request.last + 1) if request.first
                      else _ephemeral())
        for host_port in candidates:
            binding = request.binding(host_port)
            holder = next((t for t in taken if t.overlaps(binding)), None)
            if holder is None and not is_listened_on(binding, sockets[request.protocol]):
                break
        else:
            if request.first and request.first == request.last:
                raise PortTaken(
                    f"cannot publish port {request.first}/{request.protocol}"
                    f"{' on ' + request.host_ip if request.host_ip else ''}: "
                    + (f"another container on this host publishes it ({holder})" if holder
                       else "a process on this host listens on it")
                    + "; choose another host port")
            raise PortTaken(f"cannot publish {request}: every host port of it is taken "
                            "on this host")
        taken.append(binding)
        chosen.append(binding)
    return chosen


def _ephemeral() -> range:
    try:
        with open(_LOCAL_PORT_RANGE) as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        low, high = _DOCKER_DEFAULT_RANGE
    return range(low, high + 1)


def is_listened_on(binding: PortBinding, sockets) -> bool:
    """One of `sockets` (_bound's, of the binding's protocol) listens on the
    binding's host port (TCP, SCTP) or is bound to it (UDP), on its address,
    a wildcard or, for a binding of every address, any address: our DNAT
    would take that socket's connections."""
    wanted = None if binding.host_ip in ("", "0.0.0.0", "::") else \
        netaddr.IPAddress(binding.host_ip)
    for address, port in sockets:
        if port == binding.host_port and (wanted is None or not address or address == wanted):
            return True
    return False


def _bound(protocol: str, proc_net: str = "/proc/net"):
    """(address, port) of each listening or bound socket of `protocol` in
    this host's network namespace.  Read from /proc/net, as a trial bind()
    passes a listener that set SO_REUSEADDR (docker-proxy does)."""
    if protocol == "sctp":
        files = [(f"{proc_net}/sctp/eps", None)]
    else:
        files = [(f"{proc_net}/{protocol}{v}", "0A" if protocol == "tcp" else None)
                 for v in ("", "6")]
    for path, state in files:
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue  # no IPv6 or no SCTP here: nothing bound there
        for line in lines:
            fields = line.split()
            if protocol == "sctp":  # ENDPT SOCK STY SST HBKT LPORT UID INODE LADDRS...
                yield from ((netaddr.IPAddress(a), int(fields[5])) for a in fields[8:])
                continue
            if state and fields[3] != state:
                continue
            address, port = fields[1].split(":")
            yield _proc_address(address), int(port, 16)


def _proc_address(text: str) -> netaddr.IPAddress:
    """/proc/net/tcp's address: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return netaddr.IPAddress(int.from_bytes(words, "big"), 4 if len(raw) == 4 else 6)
