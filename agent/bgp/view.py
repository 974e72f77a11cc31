"""The agent's BGP view of the follower: Nodes, BGPPeers,
BGPConfigurations, IP pools and IPAM blocks and affinities in, BIRD's
configuration out (written and applied only when it changes, so BIRD keeps
every session whose configuration stayed the same)."""

from __future__ import annotations

import logging

from netaddr import IPNetwork

from agent.bgp.birdconfig import BirdInputs, Family, render
from agent.bgp.daemon import BirdDaemon
from agent.bgp.peers import peers_of
from agent.routing.model import ClusterState
from agent.routing.routes import plain
from datastore.bgp import BGPSettings
from datastore.records import BGP_CONFIGURATIONS, BGP_PEERS, Kind

LOG = logging.getLogger(__name__)


class BgpView:
    kinds = ClusterState.kinds + (BGP_PEERS, BGP_CONFIGURATIONS)

    def __init__(self, nodename: str, daemon: BirdDaemon, workload_prefix: str = "cali"):
        self.nodename, self.daemon, self.workload_prefix = nodename, daemon, workload_prefix
        self.state = ClusterState()
        self.reset()

    def reset(self) -> None:
        self.state.reset()
        self.peers, self.configurations = {}, {}

    def on_change(self, kind: Kind, key: str, record) -> bool:
        if kind not in (BGP_PEERS, BGP_CONFIGURATIONS):
            return self.state.on_change(kind, key, record)
        table = self.peers if kind is BGP_PEERS else self.configurations
        name = key[len(kind.prefix):]
        if table.get(name) == record:
            return False
        if record is None:
            del table[name]
        else:
            table[name] = record
        return True

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if not (changed or snapshot):
            return
        inputs = self.inputs()
        if inputs is None:
            LOG.warning("BIRD not configured yet: node %s has no Node with bgp.ipv4Address",
                        self.nodename)
            return
        self.daemon.listen_port = inputs.settings.listen_port
        self.daemon.apply(render(inputs))

    def inputs(self) -> BirdInputs | None:
        """What bird.cfg is rendered from (None: this node is not registered)."""
        state = self.state
        me = state.nodes.get(self.nodename)
        if me is None or me.address is None:
            return None
        settings = BGPSettings.effective(self.configurations, self.nodename)
        owned = [cidr for cidr, owner in state.block_owners().items() if owner == me.name]
        borrowed = [ip for block in state.blocks.values() for ip, owner in block.borrowed
                    if owner == me.name]
        families = []
        for version in (4, 6):
            pools = [p for p in state.pools.values() if p.version == version]
            own = sorted(c for c in owned if c.version == version)
            exported = [c for c in own if _pool_is_plain(state, c)] + sorted(
                IPNetwork(str(ip)) for ip in borrowed
                if ip.version == version and _pool_is_plain(state, ip))
            families.append(Family(
                version, me.address_of(version),
                tuple(peers_of(me, state.nodes, self.peers, self.configurations, settings,
                               version)),
                tuple(exported), tuple(own),
                tuple(sorted(p.cidr for p in pools if plain(p))),
                tuple(sorted(p.cidr for p in pools if not plain(p)))))
        return BirdInputs(me.address.ip, me.as_number or settings.as_number, settings,
                          tuple(families), me.rr_cluster_id, self.workload_prefix)


def _pool_is_plain(state: ClusterState, address) -> bool:
    """In a pool that BIRD routes (a block whose pool is gone is not announced)."""
    pool = state.pool_of(address)
    return pool is not None and plain(pool)
