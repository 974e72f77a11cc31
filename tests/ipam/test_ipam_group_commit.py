"""Concurrent requests on one node share block writes (ipam/group_commit.py)
instead of racing each other's compare-and-swaps; each address and its
handle are written in one transaction."""

import random
import threading

import pytest

from datastore.errors import DatastoreUnavailable
from datastore.etcd import Etcd
from ipam import handles
from tests.ipam.support import allocations, assert_consistent, stored_handles
from tests.lab.common import in_parallel, wait_until


@pytest.fixture
def commits(etcd_client, monkeypatch):
    """Every Etcd.commit of the test's client: (succeeded, number of creates)."""
    seen, real_commit = [], Etcd.commit

    def commit(self, creates=(), updates=(), deletes=(), read_back=()):
        result = real_commit(self, creates, updates, deletes, read_back)
        seen.append((bool(result), len(creates)))
        return result
    monkeypatch.setattr(Etcd, "commit", commit)
    return seen


def test_parallel_requests_on_one_node_never_lose_a_write(etcd_client, make_pool, node_ipam,
                                                           commits):
    make_pool("p", "10.0.0.0/24", block_size=26)
    ipam = node_ipam("host1")
    ipam.release_ips([ipam.auto_assign(4, "warm-up", None)])  # the node's block exists
    del commits[:]
    held, lock = {}, threading.Lock()

    def churn(worker):
        rng, mine = random.Random(worker), []
        for i in range(40):
            if mine and rng.random() < 0.4:
                assert ipam.release_ips([mine.pop()]) == []
            else:
                ip = ipam.auto_assign(4, f"w{worker}.{i}", None)
                mine.append(ip)
        with lock:
            for ip in mine:
                assert str(ip) not in held
                held[str(ip)] = None
    in_parallel(churn, 8)
    assert all(ok for ok, _ in commits), "a write lost against this node's own writes"
    assert set(allocations(etcd_client)) == set(held)
    assert_consistent(etcd_client)


def test_queued_requests_are_written_in_one_transaction(etcd_client, make_pool, node_ipam,
                                                       monkeypatch):
    make_pool("p", "10.0.0.0/24", block_size=26)
    ipam = node_ipam("host1")
    ipam.auto_assign(4, "first", None)
    # The next write waits until five more requests queue behind it.
    gate, commits, real_commit = threading.Event(), [], Etcd.commit

    def held_commit(self, *args, **kwargs):
        commits.append(args)
        gate.wait(10)
        return real_commit(self, *args, **kwargs)
    monkeypatch.setattr(Etcd, "commit", held_commit)
    results = []
    threads = [threading.Thread(target=lambda n=n: results.append(
        ipam.auto_assign(4, f"h{n}", None))) for n in range(6)]
    threads[0].start()
    assert wait_until(lambda: commits, 10)
    for t in threads[1:]:
        t.start()
    (writer,) = ipam._writers.values()
    assert wait_until(lambda: len(writer._queue) == 5, 10)
    gate.set()
    for t in threads:
        t.join()
    assert len(set(results)) == 6 and len(commits) == 2  # the first, then the other five
    assert set(stored_handles(etcd_client)) == {"first"} | {f"h{n}" for n in range(6)}
    assert_consistent(etcd_client)


def test_an_existing_handle_is_counted_up(etcd_client, make_pool, node_ipam):
    """A caller's handle that already exists cannot be created with the
    block: it is counted up first, then the block written (libcalico-go's order)."""
    make_pool("p", "10.0.0.0/24", block_size=26)
    ipam = node_ipam("host1")
    ipam.auto_assign(4, "shared", None)
    ipam.auto_assign(4, "shared", None)
    assert sum(handles.get(etcd_client, "shared").values()) == 2
    assert_consistent(etcd_client)


def test_every_waiter_hears_of_an_outage_and_the_next_request_works(
        etcd_clean, etcd_client, make_pool, node_ipam):
    make_pool("p", "10.0.0.0/24", block_size=26)
    ipam = node_ipam("host1")
    ipam.auto_assign(4, "before", None)
    etcd_clean.stop()
    errors = []

    def request(n):
        try:
            ipam.auto_assign(4, f"during{n}", None)
        except DatastoreUnavailable as exc:
            errors.append(exc)
    in_parallel(request, 4)
    assert len(errors) == 4
    etcd_clean.start()
    ip = ipam.auto_assign(4, "after", None)
    assert allocations(etcd_client)[str(ip)] == "after"
    assert_consistent(etcd_client)
