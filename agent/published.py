"""Published ports (`docker run -p`) on this host: a view of the agent's
follower that keeps this node's WorkloadEndpoints with published ports
(datastore/ports.py, written by the driver) and renders them as a table of
its own, `inet calico-libnetwork-ports`, written whole in one transaction
(flush and add) after each batch that changed them: replayable, and right
again after any restart.

The table outlives the agent (no `owner` flag): a plugin killed or
restarted leaves the bindings working, and the next agent's first write
replaces them with what etcd holds.  The agent's main loop checks it is
there (`check`, as it repairs the anti-spoofing table): after `nft flush
ruleset` the next batch writes it again.

What it does, as Docker's bridge does for its containers:
* DNAT, in prerouting (other hosts, containers) and output (the host's own
  connections), of a destination that is an address of this host (or only
  the binding's host address) and the host port, to the container's
  address and port; the connection carries PUBLISHED_MARK in its conntrack
  mark, which the policy table accepts (agent/policy/compiler.py).
* The client's address is kept, except where the answer would not come
  back through the host: a container reaching its own published port
  (hairpin) and the host's connections from 127.0.0.0/8 are masqueraded.
* The latter leave through the cali with a loopback source, which the
  kernel allows only with route_localnet on it (the driver sets it on a
  publishing endpoint's cali at Join); so what a container sends to
  127.0.0.0/8 through its cali is dropped here, before routing.
"""

import logging
from collections.abc import Iterable

from agent import nftables
from datastore.ports import PortBinding
from datastore.records import WORKLOAD_ENDPOINTS, Kind
from datastore.workload_endpoint import WorkloadEndpoint
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

TABLE = "inet calico-libnetwork-ports"
PUBLISHED_MARK = 0x40000  # conntrack mark bit of a connection to a published port
_MARKED = f"ct mark & {PUBLISHED_MARK:#x} == {PUBLISHED_MARK:#x}"
_FAMILIES = {4: ("ip", "ipv4"), 6: ("ip6", "ipv6")}
UNSPECIFIED = ("", "0.0.0.0", "::")  # host addresses that mean every address of the host


def script(endpoints: Iterable[WorkloadEndpoint]) -> str:
    """The whole table for these endpoints' bindings."""
    t = TABLE
    lines = [f"add table {t}", f"flush table {t}",
             f"add chain {t} localnet {{ type filter hook prerouting priority raw; }}",
             f'add rule {t} localnet iifname "cali*" ip daddr 127.0.0.0/8 drop',
             f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; }}",
             f"add chain {t} output {{ type nat hook output priority -100; }}",
             f"add chain {t} postrouting {{ type nat hook postrouting priority srcnat; }}",
             f"add chain {t} published",
             f"add rule {t} prerouting fib daddr type local jump published",
             f"add rule {t} output fib daddr type local jump published",
             f"add rule {t} postrouting {_MARKED} ip saddr 127.0.0.0/8 masquerade"]
    for endpoint in sorted(endpoints, key=lambda e: e.interface):
        for version, address, bindings in forwards(endpoint):
            ip, nfproto = _FAMILIES[version]
            lines.append(f"add rule {t} postrouting {_MARKED} {ip} saddr {address} "
                         f"{ip} daddr {address} masquerade")
            lines += [f"add rule {t} published " + _dnat(binding, ip, nfproto, address)
                      for binding in bindings]
    return "\n".join(lines) + "\n"


def forwards(endpoint: WorkloadEndpoint):
    """(IP version, address, the bindings forwarded to it) for each of the
    endpoint's addresses: a binding without a host address goes to each
    family, one with a host address to its own."""
    for address in endpoint.addresses:
        version = 6 if ":" in address else 4
        yield version, address, [b for b in endpoint.published if b.version in (None, version)]


def _dnat(binding: PortBinding, ip: str, nfproto: str, address: str) -> str:
    unspecified = binding.host_ip in UNSPECIFIED
    destination = f"meta nfproto {nfproto}" if unspecified else f"{ip} daddr {binding.host_ip}"
    target = f"[{address}]" if ip == "ip6" else address
    return (f"{destination} meta l4proto {binding.protocol} th dport {binding.host_port} "
            f"ct mark set ct mark | {PUBLISHED_MARK:#x} dnat {ip} to {target}:{binding.port}")


class PublishedPorts:
    """The follower's view: this node's publishing endpoints, and the table
    written after each batch that changed them (again after a failed write)."""

    kinds = (WORKLOAD_ENDPOINTS,)

    def __init__(self, node: str, run=nftables.run):
        self.node = node
        self.run = run
        self.endpoints: dict[str, WorkloadEndpoint] = {}
        self.programmed = False  # the table holds self.endpoints' bindings

    def reset(self) -> None:
        self.endpoints = {}

    def on_change(self, kind: Kind, key: str, wep: WorkloadEndpoint | None) -> bool:
        if kind is not WORKLOAD_ENDPOINTS:
            return False
        mine = wep if wep is not None and wep.node == self.node and wep.published else None
        if self.endpoints.get(key) == mine:
            return False
        if mine is None:
            del self.endpoints[key]
        else:
            self.endpoints[key] = mine
        return True

    def check(self) -> None:
        """From another thread: a table gone since it was written is written
        again after the follower's next batch (which the liveness keys bring
        within seconds)."""
        if not self.programmed:
            return
        try:
            self.run(f"list chain {TABLE} published\n")
        except KernelError:
            LOG.warning("table %s was gone (nft flush ruleset?): writing it again", TABLE)
            self.programmed = False

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if self.programmed and not (changed or snapshot):
            return
        failing = not self.programmed and not (changed or snapshot)
        try:
            self.run(script(self.endpoints.values()))
        except KernelError as exc:
            # Tried again after each batch (the liveness keys make one every few seconds).
            (LOG.debug if failing else LOG.error)("published ports are not programmed: %s",
                                                  exc)
            self.programmed = False
            return
        self.programmed = True
        LOG.info("published ports: %d endpoint(s), %d binding(s)", len(self.endpoints),
                 sum(len(e.published) for e in self.endpoints.values()))
