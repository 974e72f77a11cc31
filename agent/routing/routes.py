"""The routes, ARP and FDB entries this host should have, computed from the
cluster state alone (what BIRD and Felix would program).  Pure.

* a block confirmed-affine to another node -> a route to it via that node:
  directly, or through the VXLAN (or IPIP) tunnel as its pool's mode says;
* an address borrowed from a block (allocated to a node other than the
  block's) -> a /32 (/128) to the node holding it (that node itself has its
  /32 on the cali interface already);
* a block affine to this node -> a blackhole, so unused addresses in it
  never leak to the default route;
* for VXLAN: each remote VTEP's MAC as a static ARP entry on vxlan.calico,
  and an FDB entry sending that MAC to the remote node's address.

IPv6 blocks go the same way, via the nodes' bgp.ipv6Address (vxlan-v6.calico
for VXLAN; IPIP is IPv4 only), when this node has an IPv6 address (IP6).
"""

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from netaddr import IPAddress, IPNetwork

from agent.routing.model import ClusterState
from datastore.node import Node
from ipam.pools import Pool

LOG = logging.getLogger(__name__)

VXLAN_DEVICE = "vxlan.calico"
VXLAN6_DEVICE = "vxlan-v6.calico"
IPIP_DEVICE = "tunl0"
UNICAST, BLACKHOLE = "unicast", "blackhole"
DIRECT, VXLAN, IPIP = "direct", "vxlan", "ipip"


class Route(NamedTuple):
    dst: IPNetwork
    type: str = UNICAST
    gateway: IPAddress | None = None
    dev: str | None = None  # None: the kernel picks the interface of the gateway
    onlink: bool = False

    def __str__(self):
        text = f"{self.type} {self.dst}" if self.type != UNICAST else str(self.dst)
        if self.gateway:
            text += f" via {self.gateway}"
        if self.dev:
            text += f" dev {self.dev}"
        return text + (" onlink" if self.onlink else "")


class Neighbour(NamedTuple):
    ip: IPAddress
    mac: str


class FdbEntry(NamedTuple):
    mac: str
    dst: IPAddress


@dataclass(frozen=True)
class Local:
    """What the computation needs to know about this host."""
    node: str
    address: IPNetwork  # this node's bgp.ipv4Address
    connected: tuple[IPNetwork, ...] = ()  # subnets on this host's interfaces (v4 and v6)
    vxlan: bool = False  # vxlan.calico is up
    ipip: bool = False  # the kernel has IPIP
    address6: IPNetwork | None = None  # this node's bgp.ipv6Address (None: IP6=none)
    vxlan6: bool = False  # vxlan-v6.calico is up
    # CALICO_NETWORKING_BACKEND=bird: BIRD programs the routes of plain
    # (unencapsulated) pools, learned over BGP; we keep VXLAN and IPIP.
    bgp: bool = False

    def address_of(self, version: int) -> IPNetwork | None:
        return self.address if version == 4 else self.address6


@dataclass
class Desired:
    routes: dict[IPNetwork, Route] = field(default_factory=dict)
    neighbours: set[Neighbour] = field(default_factory=set)
    fdb: set[FdbEntry] = field(default_factory=set)
    # The same for vxlan-v6.calico: IPv6 VTEPs and the nodes' IPv6 addresses.
    neighbours6: set[Neighbour] = field(default_factory=set)
    fdb6: set[FdbEntry] = field(default_factory=set)
    # Why some destinations have no route, for the log (dst -> reason).
    unroutable: dict[IPNetwork, str] = field(default_factory=dict)


def encapsulation(pool: Pool | None, local: Local, node: Node, version: int = 4) -> str:
    """How traffic to node's workloads in pool leaves this host (both nodes
    have an address of the pool's IP version)."""
    same_subnet = node.address_of(version).ip in local.address_of(version).cidr
    for mode, kind in ((pool.vxlan_mode if pool else "Never", VXLAN),
                       (pool.ipip_mode if pool and version == 4 else "Never", IPIP)):
        if mode == "Always" or (mode == "CrossSubnet" and not same_subnet):
            return kind
    return DIRECT


def plain(pool: Pool | None) -> bool:
    """A pool (or no pool) whose traffic is routed as it is, not tunnelled."""
    return pool is None or (pool.vxlan_mode == "Never" and pool.ipip_mode == "Never")


def needs_ipip(state: ClusterState) -> bool:
    return any(p.ipip_mode != "Never" and p.version == 4 for p in state.pools.values())


def desired_state(state: ClusterState, local: Local) -> Desired:
    desired = Desired()
    for cidr, owner in state.block_owners().items():
        if owner == local.node:
            desired.routes[cidr] = Route(cidr, BLACKHOLE)
        else:
            _route_to(desired, state, local, cidr, owner)
    for block in state.blocks.values():
        for ip, owner in block.borrowed:
            if owner != local.node:
                _route_to(desired, state, local, IPNetwork(str(ip)), owner)
    if local.vxlan:
        for node in state.nodes.values():
            if node.name != local.node and node.vtep_ip and node.vtep_mac and node.address:
                desired.neighbours.add(Neighbour(node.vtep_ip, node.vtep_mac))
                desired.fdb.add(FdbEntry(node.vtep_mac, node.address.ip))
    if local.vxlan6:
        for node in state.nodes.values():
            if node.name != local.node and node.vtep6_ip and node.vtep6_mac and node.address6:
                desired.neighbours6.add(Neighbour(node.vtep6_ip, node.vtep6_mac))
                desired.fdb6.add(FdbEntry(node.vtep6_mac, node.address6.ip))
    return desired


def _route_to(desired: Desired, state: ClusterState, local: Local, dst: IPNetwork,
              owner: str) -> None:
    version = dst.version
    field = "bgp.ipv4Address" if version == 4 else "bgp.ipv6Address"
    if local.address_of(version) is None:
        desired.unroutable[dst] = "this node has no IPv6 address (set IP6)"
        return
    node = state.nodes.get(owner)
    address = node and node.address_of(version)
    if address is None:
        desired.unroutable[dst] = f"node {owner} has no Node resource with {field}"
        return
    pool = state.pool_of(dst)
    if local.bgp and plain(pool):
        return  # BIRD's, as calico/node leaves it to BIRD
    kind = encapsulation(pool, local, node, version)
    if kind == VXLAN:
        device = VXLAN_DEVICE if version == 4 else VXLAN6_DEVICE
        vtep_ip, vtep_mac = node.vtep_of(version)
        if not (local.vxlan if version == 4 else local.vxlan6):
            desired.unroutable[dst] = f"this host's {device} is not ready"
        elif not (vtep_ip and vtep_mac):
            desired.unroutable[dst] = f"node {owner} has no {device} tunnel address yet"
        else:
            desired.routes[dst] = Route(dst, gateway=vtep_ip, dev=device, onlink=True)
    elif kind == IPIP:
        if local.ipip:
            desired.routes[dst] = Route(dst, gateway=node.address.ip, dev=IPIP_DEVICE,
                                        onlink=True)
        else:
            desired.unroutable[dst] = "the kernel has no IPIP (use a VXLAN pool)"
    elif any(address.ip in subnet for subnet in local.connected):
        desired.routes[dst] = Route(dst, gateway=address.ip)
    else:
        desired.unroutable[dst] = (
            f"node {owner} ({address.ip}) is not on a subnet of this host; "
            "give the pool vxlanMode CrossSubnet or Always")
