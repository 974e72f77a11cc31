"""Four OS processes, each a node with its own etcd client, allocate and
release at once from one small pool until blocks run out and they borrow."""

import logging
import multiprocessing
import random
import time

from datastore.etcd import Etcd
from ipam.allocator import Ipam
from ipam.errors import PoolsExhausted
from tests.ipam.support import allocations, assert_consistent

TARGETS = (100, 80, 60, 30)  # addresses each node tries to hold: 270 > 256
OPS = 400


class _Borrowings(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += "borrowed" in record.getMessage()


def churn(endpoints, node, target, seed):
    """Allocate and release at random; (held ip -> handle, holding spans
    (ip, from, to), exhausted count, borrow count)."""
    borrowings = _Borrowings()
    logger = logging.getLogger("ipam.allocator")
    logger.setLevel(logging.INFO)
    logger.addHandler(borrowings)
    etcd = Etcd(endpoints, timeout=10)  # made in the child: gRPC does not survive fork
    ipam, rng = Ipam(etcd, node), random.Random(seed)
    held, since, spans, exhausted = {}, {}, [], 0
    for i in range(OPS):
        if held and (len(held) >= target or rng.random() < 0.3):
            ip = rng.choice(sorted(held))
            handle_id = held.pop(ip)
            spans.append((ip, since.pop(ip), time.monotonic()))  # before the release starts
            if rng.random() < 0.5:
                assert ipam.release_ips([ip]) == []
            else:
                assert ipam.release_by_handle(handle_id) == 1
        else:
            handle_id = f"{node}.{i}"
            try:
                ip = str(ipam.auto_assign(4, handle_id, {"node": node}))
            except PoolsExhausted:
                exhausted += 1
                continue
            since[ip] = time.monotonic()  # after the allocation returned
            held[ip] = handle_id
    spans += [(ip, start, float("inf")) for ip, start in since.items()]
    etcd.close()
    return held, spans, exhausted, borrowings.count


def test_concurrent_nodes_never_share_an_address(etcd_clean, etcd_client, make_pool):
    make_pool("small", "10.0.0.0/24", block_size=28)
    jobs = [(etcd_clean.endpoints, f"node{n}", target, n) for n, target in enumerate(TARGETS)]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as workers:
        results = workers.starmap(churn, jobs)

    # No address was held by two nodes at once: the spans (each inside the
    # real holding time) of one address never overlap.
    spans = sorted(span for _, node_spans, _, _ in results for span in node_spans)
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if a[0] == b[0] and b[1] < a[2]]
    assert overlaps == []

    held = {}
    for node_held, _, _, _ in results:
        assert not held.keys() & node_held.keys()
        held.update(node_held)
    # Every held address is allocated exactly once, with its holder's handle,
    # and nothing else is allocated; handles match blocks; blocks are sound.
    assert allocations(etcd_client) == held
    assert_consistent(etcd_client)
    assert sum(borrowed for *_, borrowed in results) > 0
