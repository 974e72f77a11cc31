"""The routes, ARP and FDB entries this host should have, computed from the
cluster state alone (what BIRD and Felix would program).  Pure.

* a block confirmed-affine to another node -> a route to it via that node:
  directly, or through the VXLAN (or IPIP) tunnel as its pool's mode says;
* an address borrowed from a block (allocated to a node other than the
  block's) -> a /32 to the node holding it (that node itself has its /32 on
  the cali interface already);
* a block affine to this node -> a blackhole, so unused addresses in it
  never leak to the default route;
* for VXLAN: each remote VTEP's MAC as a static ARP entry on vxlan.calico,
  and an FDB entry sending that MAC to the remote node's address.
"""

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from netaddr import IPAddress, IPNetwork

from agent.model import ClusterState, Node
from ipam.pools import Pool

LOG = logging.getLogger(__name__)

VXLAN_DEVICE = "vxlan.calico"
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
    connected: tuple[IPNetwork, ...] = ()  # subnets on this host's interfaces
    vxlan: bool = False  # vxlan.calico is up
    ipip: bool = False  # the kernel has IPIP


@dataclass
class Desired:
    routes: dict[IPNetwork, Route] = field(default_factory=dict)
    neighbours: set[Neighbour] = field(default_factory=set)
    fdb: set[FdbEntry] = field(default_factory=set)
    # Why some destinations have no route, for the log (dst -> reason).
    unroutable: dict[IPNetwork, str] = field(default_factory=dict)


def encapsulation(pool: Pool | None, local: Local, node: Node) -> str:
    """How traffic to node's workloads in pool leaves this host."""
    same_subnet = node.address.ip in local.address.cidr
    for mode, kind in ((pool.vxlan_mode if pool else "Never", VXLAN),
                       (pool.ipip_mode if pool else "Never", IPIP)):
        if mode == "Always" or (mode == "CrossSubnet" and not same_subnet):
            return kind
    return DIRECT


def needs_ipip(state: ClusterState) -> bool:
    return any(p.ipip_mode != "Never" and p.version == 4 for p in state.pools.values())


def desired_state(state: ClusterState, local: Local) -> Desired:
    desired = Desired()
    for cidr, owner in state.block_owners().items():
        if cidr.version != 4:
            continue
        if owner == local.node:
            desired.routes[cidr] = Route(cidr, BLACKHOLE)
        else:
            _route_to(desired, state, local, cidr, owner)
    for block in state.blocks.values():
        for ip, owner in block.borrowed:
            if owner != local.node and ip.version == 4:
                _route_to(desired, state, local, IPNetwork(f"{ip}/32"), owner)
    if local.vxlan:
        for node in state.nodes.values():
            if node.name != local.node and node.vtep_ip and node.vtep_mac and node.address:
                desired.neighbours.add(Neighbour(node.vtep_ip, node.vtep_mac))
                desired.fdb.add(FdbEntry(node.vtep_mac, node.address.ip))
    return desired


def _route_to(desired: Desired, state: ClusterState, local: Local, dst: IPNetwork,
              owner: str) -> None:
    node = state.nodes.get(owner)
    if node is None or node.address is None:
        desired.unroutable[dst] = f"node {owner} has no Node resource with bgp.ipv4Address"
        return
    kind = encapsulation(state.pool_of(dst), local, node)
    if kind == VXLAN:
        if not local.vxlan:
            desired.unroutable[dst] = "this host's vxlan.calico is not ready"
        elif not (node.vtep_ip and node.vtep_mac):
            desired.unroutable[dst] = f"node {owner} has no VXLAN tunnel address yet"
        else:
            desired.routes[dst] = Route(dst, gateway=node.vtep_ip, dev=VXLAN_DEVICE, onlink=True)
    elif kind == IPIP:
        if local.ipip:
            desired.routes[dst] = Route(dst, gateway=node.address.ip, dev=IPIP_DEVICE,
                                        onlink=True)
        else:
            desired.unroutable[dst] = "the kernel has no IPIP (use a VXLAN pool)"
    elif any(node.address.ip in subnet for subnet in local.connected):
        desired.routes[dst] = Route(dst, gateway=node.address.ip)
    else:
        desired.unroutable[dst] = (
            f"node {owner} ({node.address.ip}) is not on a subnet of this host; "
            "give the pool vxlanMode CrossSubnet or Always")
