"""This node's BGP peers, computed as calico/node's confd does
(shared/reference/calico-bgp.md §2): the node-to-node mesh, then global
BGPPeers, then node-specific ones (node, nodeSelector), then the reverse
peerings that make selector and Calico-node peerings symmetric.  Pure.

Protocol names are calico/node's, because `node status` parses them:
Mesh_<ip>, Global_<ip>, Node_<ip> with '.' and ':' replaced by '_', and
_port_<n> when the port is not the one the peer listens on by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from netaddr import IPAddress

from datastore.bgp import BGPConfiguration, BGPPeer, BGPSettings, listen_port
from datastore.node import Node

MESH, GLOBAL, NODE = "Mesh", "Global", "Node"


@dataclass(frozen=True)
class Peer:
    """One BGP session as BIRD runs it."""

    kind: str  # MESH, GLOBAL or NODE
    ip: IPAddress
    as_number: int
    port: int | None = None  # None: 179
    passive: bool = False
    rr_cluster_id: str | None = None  # the peer's, when it is a Calico route reflector
    calico_node: bool = False
    keep_next_hop: bool = False
    source_address: bool = True
    restart_time: int | None = None
    allow_local_as: int | None = None
    ttl_security: int | None = None

    @property
    def name(self) -> str:
        text = f"{self.kind}_{str(self.ip).replace('.', '_').replace(':', '_')}"
        return text + (f"_port_{self.port}" if self.port else "")


def peers_of(me: Node, nodes: Mapping[str, Node], bgp_peers: Mapping[str, BGPPeer],
             configurations: Mapping[str, BGPConfiguration],
             settings: BGPSettings, version: int) -> list[Peer]:
    """This node's peers of one IP version, by name (first one wins)."""
    mine = me.address_of(version)
    if mine is None:
        return []
    found: dict[str, Peer] = {}
    taken: set[tuple[IPAddress, int | None]] = set()  # (ip, port) already peered

    def add(peer: Peer) -> None:
        if peer.ip == mine.ip or (peer.ip, peer.port) in taken:
            return
        taken.add((peer.ip, peer.port))
        found[peer.name] = peer

    others = [n for n in nodes.values() if n.name != me.name and n.address_of(version)]
    if settings.node_to_node_mesh and me.rr_cluster_id is None:
        for node in sorted(others, key=lambda n: n.name):
            if node.rr_cluster_id is None:
                add(_to_node(MESH, node, version, mine, nodes, configurations, settings,
                             restart_time=settings.node_mesh_restart_time))
    ordered = sorted(bgp_peers.values(), key=lambda p: (not p.is_global, p.name))
    for peer in ordered:  # global ones first, as confd's first pass
        if not peer.selects_local(me.name, me.labels):
            continue
        kind = GLOBAL if peer.is_global else NODE
        if peer.peer_selector is not None:
            for node in sorted(others, key=lambda n: n.name):
                if peer.peer_selector.evaluate(node.labels):
                    add(_to_node(kind, node, version, mine, nodes, configurations, settings,
                                 peer))
        elif peer.peer_ip.version == version:
            add(_to_address(kind, peer, mine, nodes, configurations, settings))
    for peer in ordered:  # reverse: this node is the remote side of a peering
        if not _is_remote_side(peer, me, version, settings):
            continue
        for node in sorted(others, key=lambda n: n.name):
            if peer.selects_local(node.name, node.labels):
                add(_to_node(NODE, node, version, mine, nodes, configurations, settings, peer))
    return list(found.values())


def _as_of(node: Node, settings: BGPSettings) -> int:
    return node.as_number or settings.as_number


def _port_of(node: Node, configurations, settings: BGPSettings) -> int | None:
    """The port to dial a Calico node on: None when it is our own default."""
    port = listen_port(configurations, node.name)
    return None if port == settings.listen_port else port


def _to_node(kind: str, node: Node, version: int, mine, nodes, configurations,
             settings: BGPSettings, peer: BGPPeer | None = None, restart_time=None) -> Peer:
    ip = node.address_of(version).ip
    options = _options(peer) if peer else {"restart_time": restart_time}
    return Peer(kind, ip, _as_of(node, settings), _port_of(node, configurations, settings),
                passive=kind != NODE and str(ip) > str(mine.ip),
                rr_cluster_id=node.rr_cluster_id, calico_node=True, **options)


def _to_address(kind: str, peer: BGPPeer, mine, nodes, configurations,
                settings: BGPSettings) -> Peer:
    node = next((n for n in nodes.values() if n.address_of(peer.peer_ip.version)
                 and n.address_of(peer.peer_ip.version).ip == peer.peer_ip), None)
    port = peer.peer_port
    if port is None and node is not None and _as_of(node, settings) == peer.as_number:
        port = _port_of(node, configurations, settings)
    return Peer(kind, peer.peer_ip, peer.as_number, port,
                passive=node is not None and kind == GLOBAL
                and str(peer.peer_ip) > str(mine.ip),
                rr_cluster_id=node.rr_cluster_id if node else None,
                calico_node=node is not None, **_options(peer))


def _options(peer: BGPPeer) -> dict:
    return {"keep_next_hop": peer.keep_original_next_hop,
            "source_address": peer.source_address == "UseNodeIP",
            "restart_time": peer.max_restart_time,
            "allow_local_as": peer.num_allowed_local_as,
            "ttl_security": peer.ttl_security}


def _is_remote_side(peer: BGPPeer, me: Node, version: int, settings: BGPSettings) -> bool:
    if peer.peer_selector is not None:
        return peer.peer_selector.evaluate(me.labels)
    mine = me.address_of(version)
    return (peer.peer_ip.version == version and peer.peer_ip == mine.ip
            and peer.as_number == _as_of(me, settings))
