"""Node registration: the v3 Node resource with spec.bgp.ipv4Address (and
ipv6Address), as calico/node writes it at start, refusing a name or address that another
live node already uses (liveness.py says what live means)."""

import logging
import secrets

from netaddr import IPNetwork

from agent.errors import AgentError, NodeConflict
from agent.liveness import ALIVE_PREFIX, live_nodes, read_heartbeat
from agent.settings import variable
from agent.routing.vxlan import handle_id as vxlan_handle_id
from datastore.errors import TooManyConflicts
from datastore.node import Node
from datastore.resources import Resource, Resources
from ipam.allocator import Ipam
from ipam.store import BlockStore

LOG = logging.getLogger(__name__)

DELETE_HINT = "calico-libnetwork delete node"


def register(resources: Resources, name: str, address: IPNetwork,
             heartbeat_interval: float, address6: IPNetwork | None = None) -> Resource:
    """Write Node name with bgp.ipv4Address = address and bgp.ipv6Address =
    address6 (CIDR form; None removes it, as calico/node with IP6=none),
    keeping every other field; NodeConflict if a live node holds the name
    or an address."""
    check_conflicts(resources, name, address, heartbeat_interval, address6)
    created = False
    wanted = {"ipv4Address": str(address), "ipv6Address": address6 and str(address6)}

    def set_address(node: Resource) -> Resource | None:
        nonlocal created
        created = False
        bgp = node.spec.setdefault("bgp", {})
        changed = False
        for field, value in wanted.items():
            if bgp.get(field) != value:
                LOG.info("Node %s: %s %s -> %s", name, field, bgp.get(field), value)
                _set(bgp, field, value)
                changed = True
        return node if changed else None

    def new_node() -> Resource:
        nonlocal created
        created = True
        return Resource(kind="Node", name=name, spec={"bgp": {
            k: v for k, v in wanted.items() if v is not None}})

    try:
        node = resources.modify("Node", name, set_address, create=new_node)
    except TooManyConflicts:
        raise AgentError(
            f"Node {name} kept changing while this agent registered it; retry") from None
    LOG.info("%s Node %s with address %s%s", "created" if created else "registered", name,
             address, f" and {address6}" if address6 else "")
    return node


def _set(table: dict, key: str, value) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def check_conflicts(resources: Resources, name: str, address: IPNetwork,
                    heartbeat_interval: float, address6: IPNetwork | None = None) -> None:
    others = [Node.from_resource(r) for r in resources.list("Node") if r.name != name]
    # (other node, the address it shares with us)
    same_address = sorted(
        [(n.name, address.ip) for n in others if n.address and n.address.ip == address.ip]
        + [(n.name, address6.ip) for n in others
           if address6 and n.address6 and n.address6.ip == address6.ip])
    suspects = {other for other, _ in same_address}
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
    for other, ip in same_address:
        if other in live:
            raise NodeConflict(
                f"Calico node '{other}' is already using the IPv{ip.version} address {ip}, "
                f"and its agent is running. If this host is '{other}', set "
                f"NODENAME={other}; otherwise set {variable('IP', ip.version)} to this "
                f"host's own address. If node '{other}' no longer exists, stop its agent "
                f"and delete it with `{DELETE_HINT} {other}`")
        LOG.warning("stale Calico node '%s' also has address %s; delete it with `%s %s`",
                    other, ip, DELETE_HINT, other)


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
    hosts stop routing them to it), its VXLAN tunnel addresses, its liveness
    key, then the Node itself.  False if there was no such node."""
    etcd = resources.etcd
    BlockStore(etcd).release_affinities(node=name)
    ipam = Ipam(etcd, name, resources)
    for version in (4, 6):
        ipam.release_by_handle(vxlan_handle_id(name, version))
    etcd.delete(ALIVE_PREFIX + name)
    return resources.delete("Node", name)
