"""This node's Node record against IPAM: the record the agent registers
(other hosts route to this one from it), and its VXLAN tunnel addresses,
which IPAM must hold allocated, or it hands them to a container."""

from datastore.node import Node
from plugin.audit.findings import Finding, advised
from plugin.audit.layers import ETCD, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD,)
_RESTART = "restart the plugin (`calico-libnetwork run`, or its systemd unit): its agent " \
           "registers the node and its tunnel addresses"


def check(layers: Layers, _tools: Tools, _grace) -> list[Finding]:
    record = layers.nodes.get(layers.node)
    if record is None:
        return [advised("node-missing", f"node {layers.node} has no Node record: other hosts "
                        "do not route to its containers", _RESTART)]
    node = Node.from_resource(record)
    return [advised("tunnel-address",
                    f"node {layers.node}'s VXLAN tunnel address {address} is not allocated in "
                    "IPAM: a container may be given it", _RESTART)
            for address in (node.vtep_ip, node.vtep6_ip)
            if address is not None and address not in layers.allocations]
