"""Node registration: the v3 Node resource with spec.bgp.ipv4Address, as
calico/node writes it at start, refusing a name or address that another
live node already uses (liveness.py says what live means)."""

import logging
import secrets

from netaddr import IPNetwork

from agent.errors import AgentError, NodeConflict
from agent.liveness import ALIVE_PREFIX, live_nodes, read_heartbeat
from agent.model import Node
from agent.vxlan import handle_id as vxlan_handle_id
from datastore.errors import TooManyConflicts
from datastore.resources import Resource, Resources
from ipam.allocator import Ipam
from ipam.store import BlockStore

LOG = logging.getLogger(__name__)

DELETE_HINT = "calico-libnetwork delete node"


def register(resources: Resources, name: str, address: IPNetwork,
             heartbeat_interval: float) -> Resource:
    """Write Node name with bgp.ipv4Address = address (CIDR form), keeping
    every other field; NodeConflict if a live node holds the name or address."""
    check_conflicts(resources, name, address, heartbeat_interval)
    created = False

    def set_address(node: Resource) -> Resource | None:
        nonlocal created
        created = False
        bgp = node.spec.setdefault("bgp", {})
        if bgp.get("ipv4Address") == str(address):
            return None
        LOG.info("Node %s: address %s -> %s", name, bgp.get("ipv4Address"), address)
        bgp["ipv4Address"] = str(address)
        return node

    def new_node() -> Resource:
        nonlocal created
        created = True
        return Resource(kind="Node", name=name, spec={"bgp": {"ipv4Address": str(address)}})

    try:
        node = resources.modify("Node", name, set_address, create=new_node)
    except TooManyConflicts:
        raise AgentError(
            f"Node {name} kept changing while this agent registered it; retry") from None
    if created:
        LOG.info("created Node %s with address %s", name, address)
    return node


def check_conflicts(resources: Resources, name: str, address: IPNetwork,
                    heartbeat_interval: float) -> None:
    others = [Node.from_resource(r) for r in resources.list("Node") if r.name != name]
    same_address = sorted(n.name for n in others if n.address and n.address.ip == address.ip)
    suspects = set(same_address)
    beat = read_heartbeat(resources.etcd, name)
    # Our own name beating from another address is another host (or an
    # agent still running with this name); from ours, it is our last run.
    name_elsewhere = beat is not None and beat.get("ipv4Address") != str(address)
    if name_elsewhere:
        suspects.add(name)
    if not suspects:
        return
    live = live_nodes(resources.etcd, suspects, heartbeat_interval)
    if name in live:
        raise NodeConflict(
            f"Calico node '{name}' is already running on another host (address "
            f"{beat.get('ipv4Address')}); give each host its own name: set NODENAME "
            "(or HOSTNAME) for this one")
    for other in same_address:
        if other in live:
            raise NodeConflict(
                f"Calico node '{other}' is already using the IPv4 address {address.ip}, "
                f"and its agent is running. If this host is '{other}', set "
                f"NODENAME={other}; otherwise set IP to this host's own address. If node "
                f"'{other}' no longer exists, stop its agent and delete it with "
                f"`{DELETE_HINT} {other}`")
        LOG.warning("stale Calico node '%s' also has address %s; delete it with `%s %s`",
                    other, address.ip, DELETE_HINT, other)


def ensure_cluster_information(resources: Resources) -> None:
    """Felix waits for ClusterInformation default with datastoreReady: true;
    as calico/node, set it when unset, but leave an explicit false alone."""
    def set_ready(info: Resource) -> Resource | None:
        if info.spec.get("datastoreReady") is not None:
            return None
        info.spec["datastoreReady"] = True
        return info

    resources.modify("ClusterInformation", "default", set_ready, create=lambda: Resource(
        kind="ClusterInformation", name="default", spec={
            "clusterGUID": secrets.token_hex(16), "clusterType": "docker,libnetwork",
            "datastoreReady": True}))


def remove_node(resources: Resources, name: str) -> bool:
    """Forget a node as `calicoctl delete node` does: release its block
    affinities (empty blocks go, used ones lose their affinity so that other
    hosts stop routing them to it), its VXLAN tunnel address, its liveness
    key, then the Node itself.  False if there was no such node."""
    etcd = resources.etcd
    BlockStore(etcd).release_affinities(node=name)
    Ipam(etcd, name, resources).release_by_handle(vxlan_handle_id(name))
    etcd.delete(ALIVE_PREFIX + name)
    return resources.delete("Node", name)
