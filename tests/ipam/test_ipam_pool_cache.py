"""The pool cache follows etcd, steps aside while its watch is down, and
spares RequestAddress and ReleaseAddress every read: each is one etcd round
trip once the node has a block."""

import pytest
from netaddr import IPNetwork

from ipam.allocator import Ipam
from ipam.driver import IpamDriver
from ipam.pools import delete_pool, list_pools
from tests.ipam.support import assert_consistent, set_disabled
from tests.lab.common import wait_until


def names(cache):
    pools = cache.current()
    return None if pools is None else [(p.name, p.disabled) for p in pools]


def test_the_cache_follows_pools_and_steps_aside_without_etcd(etcd_clean, make_pool,
                                                              resources, pool_cache):
    assert wait_until(lambda: names(pool_cache) == [], 10)
    make_pool("b", "10.1.0.0/16")
    make_pool("a", "10.0.0.0/16")
    assert wait_until(lambda: names(pool_cache) == [("a", False), ("b", False)], 10)
    set_disabled(resources, "b")
    assert wait_until(lambda: names(pool_cache) == [("a", False), ("b", True)], 10)
    delete_pool(resources, "a", grace=0)
    assert wait_until(lambda: names(pool_cache) == [("b", True)], 10)
    # A pool changed while etcd is away is never served from a stale cache.
    etcd_clean.stop()
    assert wait_until(lambda: pool_cache.current() is None, 10)
    etcd_clean.start()
    assert wait_until(lambda: names(pool_cache) == [("b", True)], 15)


def test_request_and_release_are_one_round_trip_each(etcd_client, make_pool, resources,
                                                     pool_cache, etcd_calls):
    make_pool("p", "10.0.0.0/24", block_size=26)
    driver = IpamDriver(Ipam(etcd_client, "host1", resources, pool_cache), "host1", resources)
    assert wait_until(lambda: pool_cache.current(), 10)
    first = driver.request_address("CalicoPoolIPv4", "", {})["Address"]
    for pool_id in ("CalicoPoolIPv4", "p"):  # any pool, or the network's own pool
        with etcd_calls.during() as request_calls:
            address = driver.request_address(pool_id, "", {})["Address"]
        with etcd_calls.during() as release_calls:
            driver.release_address(pool_id, address.split("/")[0])
        assert request_calls == ["commit"] and release_calls == ["commit"]
    driver.release_address("CalicoPoolIPv4", first.split("/")[0])
    assert_consistent(etcd_client)


def test_a_pool_created_a_moment_ago_is_found(etcd_client, make_pool, resources, pool_cache):
    """The cache may lag behind: what it does not know is read from etcd
    before a request is refused."""
    assert wait_until(lambda: pool_cache.current() == [], 10)
    pool_cache.stop()  # frozen: knows no pool
    pool_cache._pools = []
    make_pool("p", "10.0.0.0/24", block_size=26)
    driver = IpamDriver(Ipam(etcd_client, "host1", resources, pool_cache), "host1", resources)
    assert driver.request_address("CalicoPoolIPv4", "", {})["Address"].startswith("10.0.0.")
    assert driver.request_address("p", "", {})["Address"].startswith("10.0.0.")
    assert driver.request_address("p", "10.0.0.200", {})["Address"] == "10.0.0.200/32"


@pytest.mark.parametrize("change", ["created", "enabled"])
def test_a_pool_the_cache_does_not_show_yet_is_used_before_pools_run_out(
        etcd_client, make_pool, resources, pool_cache, change):
    """Every pool the cache knows is full: the pools in etcd are read before
    the request is refused."""
    make_pool("small", "10.0.0.0/30", block_size=30)
    if change == "enabled":
        make_pool("more", "10.1.0.0/24", block_size=26, disabled=True)
    pool_cache.stop()  # frozen: knows what is there now
    pool_cache._pools = list_pools(resources)
    if change == "created":
        make_pool("more", "10.1.0.0/24", block_size=26)
    else:
        set_disabled(resources, "more", False)
    ipam = Ipam(etcd_client, "host1", resources, pool_cache)
    small = [ipam.auto_assign(4, f"h{n}", None) for n in range(4)]
    assert all(ip in IPNetwork("10.0.0.0/30") for ip in small)
    assert ipam.auto_assign(4, "h4", None) in IPNetwork("10.1.0.0/24")
    assert_consistent(etcd_client)
