"""For `calico-libnetwork status`: the other nodes, their addresses, whether
their agents beat, and whether this host has our routes to their blocks;
and what the agent says of its BIRD."""

import json
import time

from agent.bgp.daemon import BirdPaths
from agent.liveness import ALIVE_PREFIX, STALE_AFTER
from agent.routing.kernel import read_routes
from agent.routing.model import ClusterState
from agent.settings import AgentSettings
from datastore.etcd import Etcd
from datastore.follower import snapshot


def peer_status(etcd: Etcd, nodename: str,
                heartbeat_interval: float = AgentSettings.heartbeat_interval) -> list[dict]:
    """One dict per other node: name, ipv4Address, ipv6Address,
    vxlanTunnelAddr, alive
    (its last heartbeat is recent by this host's clock; informative only),
    blocks, IPv4 and IPv6 (each with the kernel route we hold for it, or None) and
    routesProgrammed (every block has one)."""
    state = ClusterState()
    snapshot(etcd, (state,))
    beats = {kv.key[len(ALIVE_PREFIX):]: kv.json() for kv in etcd.get_prefix(ALIVE_PREFIX)[0]}
    routes = read_routes()
    owners = state.block_owners()
    peers = []
    for name, node in sorted(state.nodes.items()):
        if name == nodename:
            continue
        beat = beats.get(name)
        blocks = [{"cidr": str(cidr), "route": str(routes[cidr]) if cidr in routes else None}
                  for cidr, owner in sorted(owners.items()) if owner == name]
        peers.append({
            "name": name,
            "ipv4Address": str(node.address) if node.address else None,
            "ipv6Address": str(node.address6) if node.address6 else None,
            "vxlanTunnelAddr": str(node.vtep_ip) if node.vtep_ip else None,
            "alive": bool(beat) and time.time() - beat.get("time", 0)
            < STALE_AFTER * heartbeat_interval,
            "blocks": blocks,
            "routesProgrammed": all(b["route"] for b in blocks),
        })
    return peers


def bgp_status(settings: AgentSettings) -> dict:
    """The agent's BIRD as it last wrote it (agent/bgp/daemon.py): backend
    (bird, vxlan or none), bird (running, not started, restarting, stopped,
    off, waiting for a configuration), and for bird: pid, reason (why it is
    not running, e.g. calico/node's BIRD holds the host), config, socket.
    {"bird": "unknown"} when no agent wrote it (never started here)."""
    try:
        with open(BirdPaths(settings.run_dir).status) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"bird": "unknown"}
