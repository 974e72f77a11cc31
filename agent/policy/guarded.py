"""Destinations no workload reaches unless a policy names them: today the
client ports of the etcd endpoints this node is configured with.  Whoever
reaches etcd's client port without a client certificate rewrites the whole
cluster, so the guard holds on this host (input) and towards every other
host (forward), whatever DefaultEndpointToHostAction says.

The guard is the first rule of each local workload's egress chain, dropping
the (address, port) pairs that none of the Allow egress rules applying to
that workload names explicitly: a rule with protocol TCP whose
destination.nets holds the address as a /32 or /128 (a wider CIDR such as
0.0.0.0/0 does not count) and whose destination.ports hold the port.
Every endpoint's port is also guarded on every address of the workload's
own host, where no rule can open it: etcd on this host may listen on any of
its addresses (169.254.1.1 and docker0's included), not only on the one
ETCD_ENDPOINTS names, and a loopback endpoint is on every host.
"""

import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from datastore.policy import PROTOCOLS, Rule

LOG = logging.getLogger(__name__)

LOCAL = "local"  # any address of this host
_TCP = PROTOCOLS["TCP"]


@dataclass(frozen=True, order=True)
class Guarded:
    address: str  # "10.0.0.1", "fd00::1", or LOCAL
    port: int
    what: str  # why it is guarded: "etcd"

    @property
    def family(self) -> int | None:
        return None if self.address == LOCAL else ipaddress.ip_address(self.address).version

    def __str__(self):
        where = "any address of this host" if self.address == LOCAL else \
            f"[{self.address}]" if self.family == 6 else self.address
        return f"tcp {where}:{self.port} ({self.what})"


def guarded_destinations(etcd_endpoints) -> frozenset[Guarded]:
    """Everything the guard closes.  The nodes' BGP port (tcp 179 on every
    Node's addresses) and the metrics port join here when they land."""
    return datastore_destinations(etcd_endpoints)


def datastore_destinations(endpoints) -> frozenset[Guarded]:
    """The client ports of the etcd endpoints on every address of this host,
    and at the endpoints' addresses (names resolved to every address of
    every family; a name that does not resolve now is logged and left out,
    the engine asks again at its next resync)."""
    found = set()
    for url in endpoints:
        parts = urlsplit(url)
        port = parts.port or 2379
        found.add(Guarded(LOCAL, port, "etcd"))
        try:
            infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            LOG.warning("cannot resolve etcd endpoint %s to guard it from workloads: %s",
                        url, exc)
            continue
        for info in infos:
            address = ipaddress.ip_address(info[4][0].split("%")[0])
            if not address.is_loopback:
                found.add(Guarded(str(address), port, "etcd"))
    return frozenset(found)


def named_by(rule: Rule, guarded: Guarded) -> bool:
    """Whether an Allow egress rule names the destination explicitly."""
    if rule.action != "Allow" or rule.protocol != _TCP or guarded.address == LOCAL:
        return False
    destination = rule.destination
    address = ipaddress.ip_address(guarded.address)
    return (any(net.size == 1 and ipaddress.ip_address(str(net.ip)) == address
                for net in destination.nets)
            and any(p.first <= guarded.port <= p.last for p in destination.ports))


def guard_rules(closed) -> list[str]:
    """nft rules dropping TCP to each closed destination."""
    rules = []
    for family, ip in ((4, "ip"), (6, "ip6")):
        pairs = sorted(f"{g.address} . {g.port}" for g in closed if g.family == family)
        if pairs:
            rules.append(f"{ip} daddr . tcp dport {{ {', '.join(pairs)} }} drop")
    local = sorted({str(g.port) for g in closed if g.address == LOCAL}, key=int)
    if local:
        rules.append(f"fib daddr type local tcp dport {{ {', '.join(local)} }} drop")
    return rules
