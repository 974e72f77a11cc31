"""Two hosts on one etcd, each an Ipam as its plugin process has it (its own
client, pool cache, block copies, handles): what one host changed is never
refused, or missed, on the other's copy of a block."""

import pytest
from netaddr import IPAddress, IPNetwork

from datastore.etcd import Etcd
from ipam.driver import IpamDriver
from ipam.allocator import Ipam
from ipam.errors import AddressInUse, InvalidRequest, PoolsExhausted
from ipam.pool_cache import PoolCache
from tests.ipam.support import affine_blocks, allocations, assert_consistent, set_ipam_config
from tests.lab.common import wait_until


@pytest.fixture
def host(etcd_clean):
    """host(node) -> that node's Ipam, with a client and caches of its own."""
    started = []

    def start(node):
        etcd = Etcd(etcd_clean.endpoints, timeout=2)
        cache = PoolCache(etcd).start()
        started.append((etcd, cache))
        assert wait_until(lambda: cache.current() is not None, 10)
        return Ipam(etcd, node, pool_cache=cache)
    yield start
    for etcd, cache in started:
        cache.stop()
        etcd.close()


def test_an_address_released_on_one_host_is_free_on_another(etcd_client, make_pool, host):
    """docker run --ip on lab1, refused on lab2, lab1's container removed,
    then docker run --ip of the same address on lab2 (issue 17)."""
    make_pool("p", "10.20.200.0/24")
    lab1, lab2 = (IpamDriver(host(n), n, None) for n in ("lab1", "lab2"))
    assert lab1.request_address("p", "10.20.200.7", {})["Address"] == "10.20.200.7/32"
    with pytest.raises(AddressInUse, match=r"10.20.200.7 is already in use \(node lab1"):
        lab2.request_address("p", "10.20.200.7", {})
    assert lab1.release_address("p", "10.20.200.7") == {}
    assert lab2.request_address("p", "10.20.200.7", {})["Address"] == "10.20.200.7/32"
    assert lab2.ipam.allocation("10.20.200.7")[1]["node"] == "lab2"
    assert_consistent(etcd_client)


def test_a_refusal_on_this_hosts_copy_costs_one_read(make_pool, host, etcd_calls):
    make_pool("p", "10.0.0.0/24", block_size=28)
    here, there = host("host1"), host("host2")
    theirs = there.auto_assign(4, "theirs", None)
    with pytest.raises(AddressInUse):
        here.assign_ip(theirs, "mine", None)  # here keeps a copy of the block
    with etcd_calls.during() as calls, pytest.raises(AddressInUse):
        here.assign_ip(theirs, "mine", None)
    assert calls == ["get", "get"]  # the IPAM config, then the block: no write


def test_an_address_whose_handle_was_released_there_is_free_here(etcd_client, make_pool, host):
    """`ipam gc --apply` on another host frees a leaked address: this host,
    which allocated it, can take it again."""
    make_pool("p", "10.0.0.0/24", block_size=28)
    here, there = host("host1"), host("host2")
    ip = here.assign_ip("10.0.0.5", "libnetwork.leaked", None)
    assert there.release_by_handle("libnetwork.leaked") == 1
    assert here.assign_ip(ip, "libnetwork.again", None) == ip
    assert allocations(etcd_client) == {"10.0.0.5": "libnetwork.again"}
    assert_consistent(etcd_client)


def test_a_block_filled_there_and_freed_here_has_room_there(etcd_client, make_pool, host):
    """Every block claimed and full: an address freed here in a block the
    other host borrowed from is found there, not refused as full."""
    make_pool("p", "10.0.0.0/27", block_size=28)  # two blocks of 16
    here, there = host("host1"), host("host2")
    mine = here.auto_assign(4, "mine", None)
    theirs = []
    with pytest.raises(PoolsExhausted):
        while True:  # its own block, then borrowing the rest of ours
            theirs.append(there.auto_assign(4, f"theirs{len(theirs)}", None))
    assert len(theirs) == 31
    assert here.release_ips([mine]) == []
    assert there.auto_assign(4, "after", None) == mine
    assert_consistent(etcd_client)


@pytest.mark.parametrize("by_handle", [False, True])
def test_an_address_allocated_there_is_released_here(etcd_client, make_pool, host, by_handle):
    """This host's copy of its block predates the other host's borrowing:
    releasing the borrowed address here frees it, by address or by handle."""
    make_pool("p", "10.0.0.0/24", block_size=28)
    here, there = host("host1"), host("host2")
    mine = here.auto_assign(4, "mine", None)
    borrowed = there.assign_ip(IPAddress(int(mine) + 5), "theirs", None)
    if by_handle:
        assert here.release_by_handle("theirs") == 1
    else:
        assert here.release_ips([borrowed]) == []
    assert allocations(etcd_client) == {str(mine): "mine"}
    assert_consistent(etcd_client)


def test_a_block_given_up_there_is_claimed_here_under_strict_affinity(etcd_client, make_pool,
                                                                     host):
    """The other host leaves (`node remove`): its empty block goes, and an
    address in it, refused here while the block was the other host's, is
    then this host's to take."""
    make_pool("p", "10.0.0.0/24", block_size=28)
    set_ipam_config(etcd_client, strict_affinity=True)
    here, there = host("host1"), host("host2")
    theirs = there.auto_assign(4, "theirs", None)
    wanted = IPAddress(int(theirs) + 5)
    with pytest.raises(InvalidRequest, match="of node host2 and strict affinity is on"):
        here.assign_ip(wanted, "mine", None)
    assert there.release_ips([theirs]) == []
    assert there.store.release_affinities(node="host2") == []
    assert here.assign_ip(wanted, "mine", None) == wanted
    assert affine_blocks(etcd_client, "host1") == {IPNetwork(f"{wanted}/28").cidr: "confirmed"}
    assert_consistent(etcd_client)
