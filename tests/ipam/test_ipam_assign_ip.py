"""Assigning a given address (docker run --ip) against a real etcd."""

import pytest
from netaddr import IPAddress, IPNetwork

from datastore.resources import Resources
from ipam.errors import AddressInUse, AddressNotInPool, InvalidRequest
from ipam.pools import get_pool
from ipam.store import BlockStore
from tests.ipam.support import affine_blocks, assert_consistent, set_disabled, set_ipam_config


def test_an_address_in_a_new_block_claims_the_block(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    assert ipam.assign_ip("10.0.0.200", "h1", {"node": "host1"}) == IPAddress("10.0.0.200")
    assert affine_blocks(etcd_client, "host1") == {IPNetwork("10.0.0.192/28"): "confirmed"}
    assert ipam.allocation("10.0.0.200") == ("h1", {"node": "host1"})
    assert_consistent(etcd_client)


def test_an_address_in_use_is_refused_with_its_holder(make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    node_ipam("host1").assign_ip("10.0.0.5", "libnetwork.1", {"node": "host1",
                                                              "endpoint-name": "web"})
    with pytest.raises(AddressInUse, match=r"10.0.0.5 is already in use \(node host1, "
                                           r"container web, handle libnetwork.1\)"):
        node_ipam("host2").assign_ip("10.0.0.5", "h2", None)


def test_an_address_outside_every_enabled_pool_is_refused(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    make_pool("off", "10.1.0.0/24", block_size=28)
    set_disabled(Resources(etcd_client), "off")
    ipam = node_ipam("host1")
    with pytest.raises(AddressNotInPool, match=r"10.9.0.1 is not in any Calico IP pool; "
                                               r"enabled pools: a \(10.0.0.0/24\)"):
        ipam.assign_ip("10.9.0.1", "h", None)
    with pytest.raises(AddressNotInPool, match=r"only in disabled pool off"):
        ipam.assign_ip("10.1.0.1", "h", None)
    with pytest.raises(InvalidRequest, match="'10.0.0.1/32' is not an IP address"):
        ipam.assign_ip("10.0.0.1/32", "h", None)
    assert BlockStore(etcd_client).blocks() == []


def test_an_address_in_another_nodes_block_is_borrowed(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    theirs = node_ipam("host2").auto_assign(4, "h2", None)
    mine = node_ipam("host1").assign_ip(theirs + 1, "h1", None)
    block, _ = BlockStore(etcd_client).get_block(IPNetwork(f"{mine}/28").cidr)
    assert block.is_affine_to("host2") and block.in_use == 2
    assert affine_blocks(etcd_client, "host1") == {}
    assert_consistent(etcd_client)


def test_strict_affinity_refuses_another_nodes_block(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    theirs = node_ipam("host2").auto_assign(4, "h2", None)
    set_ipam_config(etcd_client, strict_affinity=True)
    with pytest.raises(InvalidRequest, match="of node host2 and strict affinity is on"):
        node_ipam("host1").assign_ip(theirs + 1, "h1", None)
    assert get_pool(Resources(etcd_client), "a")
