"""Releasing addresses, handles and affinities against a real etcd."""

from netaddr import IPAddress, IPNetwork

from ipam import handles
from ipam.blocks import block_key
from ipam.store import BlockStore
from tests.ipam.support import affine_blocks, allocations, assert_consistent


def test_release_by_address(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ips = [ipam.auto_assign(4, f"h{i}", None) for i in range(3)]
    free = IPAddress("10.0.0.250")
    assert ipam.release_ips([ips[0], free, IPAddress("10.200.0.1")]) == \
        [free, IPAddress("10.200.0.1")]
    assert handles.get(etcd_client, "h0") is None  # counted down to zero: deleted
    assert ipam.allocation(ips[0]) is None
    assert ipam.release_ips([ips[0]]) == [ips[0]]  # a second release is harmless
    # The block stays (it is affine to host1); a freed address is reused last.
    nxt = [ipam.auto_assign(4, f"n{i}", None) for i in range(14)]
    assert nxt[-1] == ips[0] and ips[2] + 1 == nxt[0]
    assert_consistent(etcd_client)


def test_an_empty_block_without_affinity_is_deleted(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ips = [ipam.auto_assign(4, f"h{i}", None) for i in range(2)]
    cidr = IPNetwork(f"{ips[0]}/28").cidr
    store = ipam.store
    assert store.release_affinities(node="host1", require_empty=True) == [cidr]  # in use: kept
    assert store.release_affinities(node="host1") == []  # now it belongs to no host
    block, _ = BlockStore(etcd_client).get_block(cidr)
    assert block.affinity is None and block.in_use == 2
    assert affine_blocks(etcd_client, "host1") == {}
    ipam.release_ips(ips[:1])
    assert etcd_client.get(block_key(cidr)) is not None
    ipam.release_ips(ips[1:])
    assert etcd_client.get(block_key(cidr)) is None
    assert_consistent(etcd_client)


def test_releasing_an_empty_affine_block(etcd_client, make_pool, node_ipam):
    pool = make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ipam.release_ips([ipam.auto_assign(4, "h", None)])
    assert ipam.store.release_affinities(within=pool.cidr, require_empty=True) == []
    assert BlockStore(etcd_client).blocks() == [] and affine_blocks(etcd_client, "host1") == {}
    assert ipam.auto_assign(4, "again", None) in pool.cidr  # claims afresh


def test_release_by_handle(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ipam.auto_assign(4, "ctr", {"node": "host1"})
    ipam.assign_ip("10.0.0.200", "ctr", {"node": "host1"})  # another block
    other = ipam.auto_assign(4, "other", None)
    assert len(handles.get(etcd_client, "ctr")) == 2
    assert ipam.release_by_handle("ctr") == 2
    assert handles.get(etcd_client, "ctr") is None
    assert ipam.release_by_handle("ctr") == 0
    assert allocations(etcd_client) == {str(other): "other"}
    assert_consistent(etcd_client)


def test_release_by_handle_clears_an_overcounting_handle(etcd_client, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ip = ipam.auto_assign(4, "ctr", None)
    # As after an assignment that failed between counting up and the block write:
    handles.increment(etcd_client, "ctr", IPNetwork(f"{ip}/28").cidr, 2)
    handles.increment(etcd_client, "ctr", IPNetwork("10.0.0.128/28"), 1)
    assert ipam.release_by_handle("ctr") == 1
    assert handles.get(etcd_client, "ctr") is None
    assert_consistent(etcd_client)


def test_usage_and_affinity_views(make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    make_pool("b", "fd00::/120", block_size=124)
    ipam = node_ipam("host1")
    for i in range(3):
        ipam.auto_assign(4, f"h{i}", None)
    node_ipam("host2").auto_assign(4, "x", None)
    usage = {u.pool.name: u for u in ipam.usage()}
    assert usage["a"].in_use == 4 and usage["b"].blocks == []
    assert sorted((b.host, b.in_use, b.size) for b in usage["a"].blocks) == \
        [("host1", 3, 16), ("host2", 1, 16)]
    assert sorted(a.node for a in ipam.store.affinities()) == ["host1", "host2"]


def test_after_its_own_release_a_node_allocates_without_rereading_the_block(
        etcd_client, make_pool, node_ipam, etcd_calls):
    """Docker releases and requests addresses in turn: the block copy a node
    keeps must stay current across its own releases (else each request
    pays a failed write and a re-read), and never hide another node's write."""
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    first = ipam.auto_assign(4, "h0", None)
    ipam.release_ips([first])
    with etcd_calls.during() as calls:
        second = ipam.auto_assign(4, "h1", None)
    assert len(calls) == 2 and second != first  # the pools, then block and handle at once
    # Another node's write to the block: the kept copy is stale, the
    # compare-and-swap notices and brings the block back, nothing is lost.
    other = node_ipam("host2")
    other.assign_ip(second + 1, "x", None)
    with etcd_calls.during() as calls:
        third = ipam.auto_assign(4, "h2", None)
    assert len(calls) == 3 and third not in (second, second + 1)
    assert_consistent(etcd_client)
