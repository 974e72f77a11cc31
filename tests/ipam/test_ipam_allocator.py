"""The allocator against a real etcd: affine blocks, the claim protocol and
its repair, borrowing, exhaustion, disabled pools, nodeSelectors, IPv6."""

import pytest
from netaddr import IPAddress, IPNetwork

from datastore.resources import Resource
from ipam import handles
from ipam.allocator import BlockWalk
from ipam.blocks import (CONFIRMED, PENDING, AllocationBlock, affinity_key, affinity_value,
                         block_key)
from ipam.errors import InvalidRequest, NoPoolsConfigured, PoolNotFound, PoolsExhausted
from ipam.store import BlockStore, BlockTaken
from tests.ipam.support import (affine_blocks, allocations, assert_consistent, set_disabled,
                                set_ipam_config)


def block_of(ip, size):
    return IPNetwork(f"{ip}/{size}").cidr


def test_first_allocation_claims_a_block(etcd_client, make_pool, node_ipam):
    pool = make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    first = ipam.auto_assign(4, "h1", {"node": "host1"})
    start = next(iter(BlockWalk(pool, "host1")))
    assert first == start.network  # ordinal 0 of the node's first block
    assert ipam.auto_assign(4, "h2", None) == first + 1
    assert affine_blocks(etcd_client, "host1") == {start: CONFIRMED}
    block, _ = BlockStore(etcd_client).get_block(start)
    assert block.affinity == "host:host1" and block.in_use == 2
    assert handles.get(etcd_client, "h1") == {str(start): 1}
    assert ipam.allocation(first) == ("h1", {"node": "host1"})
    assert_consistent(etcd_client)


def test_new_process_and_stale_memory_are_harmless(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    one, two = node_ipam("host1"), node_ipam("host1")  # e.g. two plugin workers
    ips = [one.auto_assign(4, f"a{i}", None) for i in range(3)]
    ips += [two.auto_assign(4, f"b{i}", None) for i in range(3)]  # finds the block
    ips += [one.auto_assign(4, f"c{i}", None) for i in range(3)]  # its memory is stale
    assert len(set(ips)) == 9 and len({block_of(ip, 28) for ip in ips}) == 1
    assert_consistent(etcd_client)


def test_repairs_a_claim_that_died_before_writing_its_block(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    cidr = IPNetwork("10.0.0.96/28")
    etcd_client.create(affinity_key("host1", cidr), affinity_value(PENDING))
    ip = node_ipam("host1").auto_assign(4, "h1", None)
    assert ip in cidr  # the node's own pending claim is finished and used first
    assert affine_blocks(etcd_client, "host1") == {cidr: CONFIRMED}
    assert_consistent(etcd_client)


def test_repairs_a_claim_that_died_after_writing_its_block(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    cidr = IPNetwork("10.0.0.96/28")
    etcd_client.create(affinity_key("host1", cidr), affinity_value(PENDING))
    before = etcd_client.create(block_key(cidr),
                                AllocationBlock.new(cidr, "host:host1").to_json())
    ip = node_ipam("host1").auto_assign(4, "h1", None)
    assert ip in cidr
    assert affine_blocks(etcd_client, "host1") == {cidr: CONFIRMED}
    assert etcd_client.get(block_key(cidr)).mod_revision > before
    assert_consistent(etcd_client)


def test_drops_a_stale_affinity(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    cidr = IPNetwork("10.0.0.96/28")
    etcd_client.create(affinity_key("host1", cidr), affinity_value(PENDING))
    etcd_client.create(block_key(cidr), AllocationBlock.new(cidr, "host:host2").to_json())
    ip = node_ipam("host1").auto_assign(4, "h1", None)
    assert ip not in cidr
    assert cidr not in affine_blocks(etcd_client, "host1")
    assert_consistent(etcd_client)


def test_losing_a_claim_leaves_no_pending_affinity(etcd_client, make_pool):
    make_pool("a", "10.0.0.0/24", block_size=28)
    store, cidr = BlockStore(etcd_client), IPNetwork("10.0.0.96/28")
    etcd_client.create(block_key(cidr), AllocationBlock.new(cidr, "host:host2").to_json())
    with pytest.raises(BlockTaken):
        store.claim_affine_block(store.pending_affinity("host1", cidr))
    assert affine_blocks(etcd_client, "host1") == {}


def test_borrows_only_when_every_block_is_claimed(etcd_client, make_pool, node_ipam):
    make_pool("tiny", "10.0.0.0/28", block_size=30)  # 4 blocks of 4
    host1, host2 = node_ipam("host1"), node_ipam("host2")
    ips1 = [host1.auto_assign(4, f"a{i}", None) for i in range(2)]
    ips2 = [host2.auto_assign(4, f"b{i}", None) for i in range(14)]
    block1 = block_of(ips1[0], 30)
    borrowed = [ip for ip in ips2 if ip in block1]
    assert borrowed == ips2[-2:]  # host2 first claimed the other three blocks
    assert list(affine_blocks(etcd_client, "host1")) == [block1]
    assert len(affine_blocks(etcd_client, "host2")) == 3
    assert len(set(ips1 + ips2)) == 16
    for ipam in (host1, host2):
        with pytest.raises(PoolsExhausted, match=r"no free IPv4 address left in Calico IP "
                                                 r"pool\(s\) tiny \(10.0.0.0/28\)"):
            ipam.auto_assign(4, "more", None)
    assert host2.release_ips(borrowed) == []
    assert BlockStore(etcd_client).get_block(block1)[0].is_affine_to("host1")
    assert_consistent(etcd_client)


def test_borrows_only_when_every_pool_is_exhausted(etcd_client, make_pool, node_ipam):
    make_pool("p1", "10.0.0.0/30", block_size=30)
    make_pool("p2", "10.0.1.0/30", block_size=30)
    host1, host2 = node_ipam("host1"), node_ipam("host2")
    assert host1.auto_assign(4, "a", None) in IPNetwork("10.0.0.0/30")
    ips2 = [host2.auto_assign(4, f"b{i}", None) for i in range(5)]
    assert all(ip in IPNetwork("10.0.1.0/30") for ip in ips2[:4])  # claimed p2's block
    assert ips2[4] in IPNetwork("10.0.0.0/30")  # then borrowed from host1's
    assert_consistent(etcd_client)


def test_strict_affinity_forbids_borrowing(etcd_client, make_pool, node_ipam):
    make_pool("tiny", "10.0.0.0/28", block_size=30)
    set_ipam_config(etcd_client, strict_affinity=True)
    node_ipam("host1").auto_assign(4, "a", None)
    host2 = node_ipam("host2")
    ips = [host2.auto_assign(4, f"b{i}", None) for i in range(12)]
    assert len(set(ips)) == 12
    with pytest.raises(PoolsExhausted, match="strict affinity is on"):
        host2.auto_assign(4, "more", None)
    assert etcd_client.get("/calico/ipam/v2/config").value == \
        b'{"strict_affinity":true,"auto_allocate_blocks":true}'


def test_disabled_pools_are_never_used(etcd_client, resources, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    make_pool("b", "10.1.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    assert ipam.auto_assign(4, "h1", None) in IPNetwork("10.0.0.0/24")
    set_disabled(resources, "a")  # the node still has a block with room there
    assert ipam.auto_assign(4, "h2", None) in IPNetwork("10.1.0.0/24")
    with pytest.raises(PoolNotFound, match=r"pool a \(10.0.0.0/24, disabled\) is disabled"):
        ipam.auto_assign(4, "h3", None, ["a"])
    set_disabled(resources, "b")
    with pytest.raises(NoPoolsConfigured, match="configured and enabled"):
        ipam.auto_assign(4, "h4", None)
    assert_consistent(etcd_client)


def test_requested_pools(make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    make_pool("b", "10.1.0.0/24", block_size=28)
    make_pool("v6", "fd00::/120", block_size=124)
    ipam = node_ipam("host1")
    assert ipam.auto_assign(4, "h1", None, ["b"]) in IPNetwork("10.1.0.0/24")
    assert ipam.auto_assign(4, "h2", None, ["10.1.0.0/24"]) in IPNetwork("10.1.0.0/24")
    with pytest.raises(PoolNotFound, match=r"no Calico IP pool 'c'; pools: a \(10"):
        ipam.auto_assign(4, "h3", None, ["c"])
    with pytest.raises(InvalidRequest, match="not an IPv4 pool"):
        ipam.auto_assign(4, "h3", None, ["v6"])


def test_node_selectors(resources, make_pool, node_ipam):
    resources.create(Resource(kind="Node", name="host1", metadata={"labels": {"zone": "a"}}))
    make_pool("za", "10.0.0.0/24", block_size=28, node_selector="zone == 'a'")
    make_pool("zb", "10.1.0.0/24", block_size=28, node_selector="zone == 'b'")
    host1 = node_ipam("host1")
    assert host1.auto_assign(4, "h1", None) in IPNetwork("10.0.0.0/24")
    # Requested pools ignore nodeSelectors, as in libcalico-go.
    assert host1.auto_assign(4, "h2", None, ["zb"]) in IPNetwork("10.1.0.0/24")
    with pytest.raises(NoPoolsConfigured, match=r"for node host2 \(labels \{\} match no "
                                                r"pool's nodeSelector"):
        node_ipam("host2").auto_assign(4, "h3", None)  # no Node resource: no labels


def test_ipv6(etcd_client, make_pool, node_ipam):
    make_pool("v4", "10.0.0.0/24", block_size=28)
    make_pool("v6", "fd00::/120", block_size=122)
    ipam = node_ipam("host1")
    ips = [ipam.auto_assign(6, f"h{i}", None) for i in range(70)]  # more than one block
    assert all(ip.version == 6 and ip in IPNetwork("fd00::/120") for ip in ips)
    assert len(set(ips)) == 70 and len({block_of(ip, 122) for ip in ips}) == 2
    assert all(key.startswith("/calico/ipam/v2/host/host1/ipv6/block/fd00::")
               for key in (affinity_key("host1", a.cidr)
                           for a in BlockStore(etcd_client).affinities("host1")))
    assert ipam.release_ips(ips[:3] + [IPAddress("fd00::ff")]) == [IPAddress("fd00::ff")]
    assert ipam.assign_ip("fd00::ff", "given", None) == IPAddress("fd00::ff")
    assert_consistent(etcd_client)
    assert len(allocations(etcd_client)) == 68


def test_no_pools_at_all(node_ipam):
    with pytest.raises(NoPoolsConfigured) as error:
        node_ipam("host1").auto_assign(4, "h", None)
    assert str(error.value) == ("no Calico IP pools are configured; create one, e.g. "
                                "`calico-libnetwork pool create 192.168.0.0/16`")
    with pytest.raises(NoPoolsConfigured, match="no Calico IPv6 pools are configured"):
        node_ipam("host1").auto_assign(6, "h", None)
