"""Building cluster records as etcd holds them, for the agent's tests."""

import json

from netaddr import IPAddress, IPNetwork

from agent.routing.model import ClusterState
from datastore.resources import Resource
from ipam.blocks import AllocationBlock, affinity_key, affinity_value, block_key
from ipam.pools import build_pool
from tests.introspect import feed


def node_record(name, address, vtep_ip=None, vtep_mac=None, address6=None,
                vtep6_ip=None, vtep6_mac=None):
    spec = {"bgp": {"ipv4Address": address}}
    if address6:
        spec["bgp"]["ipv6Address"] = address6
    if vtep_ip:
        spec.update(ipv4VXLANTunnelAddr=vtep_ip, vxlanTunnelMACAddr=vtep_mac)
    if vtep6_ip:
        spec.update(ipv6VXLANTunnelAddr=vtep6_ip, vxlanTunnelMACAddrV6=vtep6_mac)
    res = Resource(kind="Node", name=name, spec=spec)
    return res.key, res.to_json().encode()


def pool_record(name, cidr, **options):
    res = build_pool(name, cidr, **options).to_resource()
    return res.key, res.to_json().encode()


def affinity_record(node, cidr, state="confirmed"):
    return affinity_key(node, IPNetwork(cidr)), json.dumps(affinity_value(state)).encode()


def block_record(cidr, host, allocations=()):
    """allocations: (address, node) pairs."""
    block = AllocationBlock.new(IPNetwork(cidr), f"host:{host}" if host else None)
    for ip, node in allocations:
        block.assign(IPAddress(ip), f"h-{ip}", {"node": node}, node, affinity_check=False)
    return block_key(block.cidr), block.to_json().encode()


def state_of(*records) -> ClusterState:
    state = ClusterState()
    for key, value in records:
        assert feed(state, key, value), key
    return state
