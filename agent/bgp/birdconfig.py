"""bird.cfg for one BIRD 2 serving IPv4 and IPv6, rendered from what
calico/node's confd templates render for its two BIRD 1.6 daemons
(bird.cfg, bird_aggr.cfg, bird_ipam.cfg and the bird6 ones;
shared/reference/calico-bgp.md §3-§4).  Pure: inputs in, text out.

What differs from confd, and why:
* Exports are this node's confirmed blocks and borrowed addresses of pools
  with IPIP and VXLAN off, announced from `protocol static` built from
  IPAM (not learned from the kernel), and routes learned over BGP inside
  those pools (what a route reflector reflects).  VXLAN and IPIP pools are
  the agent's, as calico/node leaves them to Felix.
* The kernel protocol learns only routes that are neither ours (the agent's
  protocol, BIRD's) nor inside a pool: what recursive next hops resolve
  through.  It programs BGP routes only, never a default route, never this
  node's own blocks, never an encapsulated pool's.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaddr import IPAddress, IPNetwork

from agent.bgp.peers import Peer
from agent.routing.kernel import ROUTE_PROTOCOL
from datastore.bgp import BGPSettings

BIRD_PROTOCOL = 12  # RTPROT_BIRD: what BIRD marks its kernel routes with
_DEBUG = {"Debug": "all", "Info": "{ states }"}  # confd's logSeverityScreen mapping


@dataclass(frozen=True)
class Family:
    """One IP version's inputs."""

    version: int
    address: IPNetwork | None  # this node's bgp.ipv{4,6}Address
    peers: tuple[Peer, ...] = ()
    exported: tuple[IPNetwork, ...] = ()  # own confirmed blocks and borrowed /32s, plain pools
    own_blocks: tuple[IPNetwork, ...] = ()  # every block affine to this node, any pool
    plain_pools: tuple[IPNetwork, ...] = ()  # pools with IPIP and VXLAN off
    encap_pools: tuple[IPNetwork, ...] = ()  # pools the agent routes itself

    @property
    def channel(self) -> str:
        return f"ipv{self.version}"


@dataclass(frozen=True)
class BirdInputs:
    router_id: IPAddress
    as_number: int
    settings: BGPSettings
    families: tuple[Family, ...]
    rr_cluster_id: str | None = None  # this node is a route reflector
    workload_prefix: str = "cali"  # CALICO_LIBNETWORK_IFPREFIX


def render(inputs: BirdInputs) -> str:
    settings = inputs.settings
    debug = _DEBUG.get(settings.log_severity)
    lines = ["# Written by calico-libnetwork's node agent from etcd; edits are overwritten.",
             f"router id {inputs.router_id};",
             "timeformat protocol iso short;  # 'Since' as calicoctl node status shows it",
             "",
             "protocol device {", "  scan time 2;", "}", ""]
    excluded = [f'-"{inputs.workload_prefix}*"', '-"vxlan.calico"', '-"vxlan-v6.calico"',
                '-"tunl0"'] + [f'-"{glob}"' for glob in settings.ignored_interfaces]
    lines += ["# Connected subnets, so that BGP next hops resolve.",
              "protocol direct {"]
    lines += [f"  {f.channel};" for f in inputs.families]
    lines += [f"  interface {', '.join(excluded)}, \"*\";", "}", ""]
    for family in inputs.families:
        lines += _family(inputs, family, debug)
    return "\n".join(lines) + "\n"


def _set(nets, suffix: str = "") -> str:
    return "[ " + ", ".join(f"{net}{suffix}" for net in nets) + " ]"


def _family(inputs: BirdInputs, family: Family, debug: str | None) -> list[str]:
    v, ch = family.version, family.channel
    default = "0.0.0.0/0" if v == 4 else "::/0"
    lines = [f"# ---- IPv{v} ----"]
    # What this node announces: blackholes in BIRD only (never programmed by it).
    lines += [f"protocol static calico_blocks{v} {{", f"  {ch};"]
    lines += [f"  route {net} blackhole;" for net in family.exported]
    lines += ["}", ""]
    lines += [f"function calico_export{v}(bool internal_peer) {{"]
    if family.exported:
        lines += [f"  if proto = \"calico_blocks{v}\" then accept;"]
    if family.plain_pools:  # what a route reflector reflects; never to eBGP, where it
        # would announce other nodes' blocks with this node as their next hop
        lines += [f"  if internal_peer && source = RTS_BGP && "
                  f"net ~ {_set(family.plain_pools, '+')} then accept;"]
    lines += ["  reject;", "}", ""]
    lines += [f"function calico_import{v}() {{",
              f"  if net = {default} then reject;"]
    if family.own_blocks:
        lines += [f"  if net ~ {_set(family.own_blocks)} then reject;  # our own blocks"]
    lines += ["  accept;", "}", ""]
    lines += [f"function calico_kernel_programming{v}() {{",
              "  if source != RTS_BGP then reject;",
              f"  if net = {default} then reject;"]
    if family.own_blocks:
        lines += [f"  if net ~ {_set(family.own_blocks)} then reject;"]
    if family.encap_pools:
        lines += [f"  if net ~ {_set(family.encap_pools, '+')} then reject;  "
                  "# VXLAN/IPIP: the agent's"]
    lines += ["  accept;", "}", ""]
    pools = family.plain_pools + family.encap_pools
    lines += [f"function calico_kernel_import{v}() {{",
              f"  if krt_source = {ROUTE_PROTOCOL} || krt_source = {BIRD_PROTOCOL} "
              "then reject;  # the agent's routes, BIRD's own"]
    if pools:
        lines += [f"  if net ~ {_set(pools, '+')} then reject;  # workloads and blocks"]
    lines += ["  accept;", "}", ""]
    lines += [f"protocol kernel kernel{v} {{",
              "  learn; persist; scan time 2; graceful restart; merge paths on;",
              f"  {ch} {{ import where calico_kernel_import{v}(); "
              f"export where calico_kernel_programming{v}(); }};", "}", ""]
    if family.address is None:
        return lines + [f"# IPv{v} disabled on this node (no bgp.ipv{v}Address).", ""]
    settings = inputs.settings
    lines += [f"template bgp bgp_template{v} {{",
              "  description \"Connection to BGP peer\";",
              f"  local{' ' + str(family.address.ip) if settings.bind_mode == 'NodeIP' else ''}"
              f"{' port ' + str(settings.listen_port) if settings.listen_port != 179 else ''}"
              f" as {inputs.as_number};"]
    if settings.bind_mode == "NodeIP":
        lines += ["  strict bind on;"]
    if debug:
        lines += [f"  debug {debug};"]
    lines += ["  graceful restart;",
              "  connect delay time 2;", "  connect retry time 5;", "  error wait time 5, 30;",
              f"  {ch} {{ gateway recursive; add paths on; }};",
              "}", ""]
    for peer in sorted(family.peers, key=lambda p: p.name):
        lines += _peer(inputs, family, peer)
    return lines


def _peer(inputs: BirdInputs, family: Family, peer: Peer) -> list[str]:
    ibgp = peer.as_number == inputs.as_number
    lines = [f"protocol bgp {peer.name} from bgp_template{family.version} {{",
             f"  neighbor {peer.ip}{f' port {peer.port}' if peer.port else ''} "
             f"as {peer.as_number};"]
    if peer.source_address:
        lines += [f"  source address {family.address.ip};"]
    if peer.kind != "Mesh":  # explicit peers may be routers some hops away
        if peer.ttl_security:
            lines += ["  ttl security on;", f"  multihop {peer.ttl_security};"]
        else:
            lines += ["  multihop;"]
    if peer.passive:
        lines += ["  passive on;  # the peer with the lower IP connects"]
    if peer.restart_time:
        lines += [f"  graceful restart time {peer.restart_time};"]
    if peer.allow_local_as:
        lines += [f"  allow local as {peer.allow_local_as};"]
    if inputs.rr_cluster_id and ibgp and peer.rr_cluster_id != inputs.rr_cluster_id:
        lines += ["  rr client;", f"  rr cluster id {inputs.rr_cluster_id};"]
    keep = " next hop keep;" if peer.keep_next_hop and not ibgp else ""
    lines += [f"  {family.channel} {{ import where calico_import{family.version}(); "
              f"export where calico_export{family.version}({str(ibgp).lower()});{keep} }};"]
    return lines + ["}", ""]
