"""etcd dies under the allocator: calls fail fast with DatastoreUnavailable
and what was written before stays consistent."""

import threading
import time

import pytest

from datastore.errors import DatastoreUnavailable
from datastore.etcd import Etcd
from ipam.allocator import Ipam
from tests.ipam.support import allocations, assert_consistent

FAIL_WITHIN = 5.0  # seconds; the test client's timeout is 2 s


def wait_for_etcd(client, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.revision()
        except DatastoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_every_operation_fails_fast_while_etcd_is_down(etcd_clean, etcd_client, make_pool,
                                                       node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ip = ipam.auto_assign(4, "h1", None)
    etcd_clean.kill()
    try:
        for operation in (lambda: ipam.auto_assign(4, "h2", None),
                          lambda: ipam.assign_ip(ip + 5, "h3", None),
                          lambda: ipam.release_ips([ip]),
                          lambda: ipam.release_by_handle("h1"),
                          lambda: ipam.allocation(ip)):
            start = time.monotonic()
            with pytest.raises(DatastoreUnavailable, match="cannot reach etcd"):
                operation()
            assert time.monotonic() - start < FAIL_WITHIN
    finally:
        etcd_clean.start()
    wait_for_etcd(etcd_client)
    assert ipam.allocation(ip) == ("h1", {})
    assert ipam.auto_assign(4, "h2", None) == ip + 1
    assert_consistent(etcd_client)


def test_etcd_killed_mid_run_leaves_nothing_half_written(etcd_clean, etcd_client, make_pool):
    make_pool("a", "10.0.0.0/22", block_size=28)  # small blocks: claims are frequent
    outcome = {}

    def churn(node):
        client = Etcd(etcd_clean.endpoints, timeout=2)
        ipam, held = Ipam(client, node), []
        try:
            for i in range(1_000_000):
                held.append(ipam.auto_assign(4, f"{node}.{i}", {"node": node}))
                if i % 3 == 0:
                    ipam.release_ips([held.pop(0)])
        except DatastoreUnavailable:
            outcome[node] = (held, time.monotonic())
        finally:
            client.close()

    threads = [threading.Thread(target=churn, args=(f"host{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    killed_at = time.monotonic()
    etcd_clean.kill()
    for thread in threads:
        thread.join(timeout=FAIL_WITHIN + 5)
    etcd_clean.start()
    assert not any(t.is_alive() for t in threads), "an allocator hung after etcd died"
    assert sorted(outcome) == ["host0", "host1"]
    for held, failed_at in outcome.values():
        assert held and failed_at - killed_at < FAIL_WITHIN

    wait_for_etcd(etcd_client)
    # Handles may overcount (counted up before a block write that never
    # happened) but blocks, affinities and everything else must be sound.
    assert_consistent(etcd_client, exact_handles=False)
    stored = allocations(etcd_client)
    for node, (held, _) in outcome.items():
        assert all(stored[str(ip)].startswith(node + ".") for ip in held)
    # Each node carries on, repairing any claim the outage cut short.
    for node, (held, _) in outcome.items():
        ip = Ipam(etcd_client, node).auto_assign(4, f"{node}.after", None)
        assert str(ip) not in stored
    assert_consistent(etcd_client, exact_handles=False)
