"""IPAM allocation benchmark (not a test; prints figures).

    /tmp/venv/bin/python bench/ipam.py [--count 10000] [--procs 4] [--per-proc 2500]

Starts its own etcd (data in /dev/shm) unless ETCD_ENDPOINTS is set; with
ETCD_ENDPOINTS it uses pool --cidr (which must not overlap an existing pool)
and removes what it wrote at the end.

1. One node allocates --count addresses from a /16 pool, one at a time as
   Docker does: allocations/s, and the mean cost of the first and the last
   500 (a ratio near 1 means the cost stays flat as blocks fill).
2. --procs processes, each its own node and etcd client, allocate
   --per-proc addresses each at the same time: aggregate allocations/s and
   the number of addresses handed out twice (must be 0).
3. --threads requests at once on one node, as in a burst of `docker run`s
   (the plugin's threads, its pool cache): --pairs addresses requested and
   released; block writes lost to the node's own other writes (failed
   compare-and-swaps), etcd round trips per pair, p50/p99 per pair.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # not bench/, whose ipam.py would shadow the package

from datastore.etcd import Etcd  # noqa: E402
from datastore.resources import Resources  # noqa: E402
from ipam import pools  # noqa: E402
from ipam.allocator import Ipam  # noqa: E402
from ipam.blocks import affinity_prefix, block_key, cidr_from_key, handle_key  # noqa: E402
from ipam.pool_cache import PoolCache  # noqa: E402
from ipam.store import BlockStore  # noqa: E402

POOL = "bench-ipam"
WINDOW = 500


def allocate(endpoints, node, count):
    """Allocate count addresses as node; (addresses, seconds per allocation)."""
    etcd = Etcd(endpoints)  # per process: gRPC channels do not survive fork
    ipam = Ipam(etcd, node)
    ips, costs = [], []
    for i in range(count):
        attrs = {"node": node, "type": "libnetwork", "network-pool": POOL,
                 "timestamp": "2024-01-01T00:00:00Z", "endpoint-name": f"ctr-{i}"}
        start = time.perf_counter()
        ips.append(str(ipam.auto_assign(4, f"bench.{node}.{i}", attrs, [POOL])))
        costs.append(time.perf_counter() - start)
    etcd.close()
    return ips, costs


def _allocate_in_child(args):
    return allocate(*args)


def burst(endpoints, node, threads, pairs):
    """Part 3: threads request and release pairs addresses on one node."""
    etcd = Etcd(endpoints)
    cache = PoolCache(etcd).start()
    ipam = Ipam(etcd, node, Resources(etcd), cache)
    while cache.current() is None:
        time.sleep(0.01)
    ipam.release_ips([ipam.auto_assign(4, "bench.warm-up", None, [POOL])])
    lost, trips, real_commit, real_call = [0], [0], etcd.commit, etcd._call

    def commit(*args, **kwargs):
        result = real_commit(*args, **kwargs)
        lost[0] += not result
        return result

    def call(op, fn):
        trips[0] += 1
        return real_call(op, fn)
    etcd.commit, etcd._call = commit, call
    costs = []

    def worker(n):
        for i in range(pairs // threads):
            start = time.perf_counter()
            ip = ipam.auto_assign(4, f"bench.{node}.{n}.{i}", None, [POOL])
            ipam.release_ips([ip])
            costs.append(time.perf_counter() - start)
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    costs.sort()
    print(f"{threads} requests at once on one node: {len(costs)} request+release pairs in "
          f"{elapsed:.2f} s; lost block writes {lost[0]}; etcd round trips per pair "
          f"{trips[0] / len(costs):.1f}; per pair p50 {costs[len(costs) // 2] * 1000:.1f} ms, "
          f"p99 {costs[int(len(costs) * 0.99)] * 1000:.1f} ms")
    cache.stop()
    etcd.close()


def run(endpoints, cidr, count, procs, per_proc, threads, pairs):
    etcd = Etcd(endpoints)
    resources = Resources(etcd)
    pools.create_pool(resources, pools.build_pool(POOL, cidr))
    try:
        start = time.perf_counter()
        single, costs = allocate(endpoints, "bench-node-0", count)
        elapsed = time.perf_counter() - start
        print(f"single node: {count} allocations in {elapsed:.1f} s = "
              f"{count / elapsed:.0f} alloc/s")
        # The mean includes the claim of a new block every block-size
        # allocations; the median shows the common path alone.
        for name, average in (("mean", statistics.mean), ("median", statistics.median)):
            first, last = average(costs[:WINDOW]) * 1000, average(costs[-WINDOW:]) * 1000
            print(f"  {name} ms/allocation: first {WINDOW} {first:.2f}, last {WINDOW} "
                  f"{last:.2f} (last/first = {last / first:.2f})")

        jobs = [(endpoints, f"bench-node-{n + 1}", per_proc) for n in range(procs)]
        with multiprocessing.get_context("spawn").Pool(procs) as workers:
            start = time.perf_counter()
            results = workers.map(_allocate_in_child, jobs)
            elapsed = time.perf_counter() - start
        concurrent = [ip for ips, _ in results for ip in ips]
        every = single + concurrent
        stored = sum(block.in_use for _, block, _ in BlockStore(etcd).blocks(4))
        print(f"{procs} nodes at once: {len(concurrent)} allocations in {elapsed:.1f} s = "
              f"{len(concurrent) / elapsed:.0f} alloc/s aggregate")
        print(f"  duplicates: {len(every) - len(set(every))}; addresses allocated in "
              f"etcd: {stored} (expected {len(every)})")
        burst(endpoints, "bench-node-0", threads, pairs)
    finally:
        cleanup(etcd, procs)


def cleanup(etcd, procs):
    """Remove the pool, its blocks, and the bench nodes' affinities and handles."""
    pool = pools.get_pool(Resources(etcd), POOL)
    for key in BlockStore(etcd).block_revisions(4):
        if cidr_from_key(key) in pool.cidr:
            etcd.delete(block_key(cidr_from_key(key)))
    prefixes = [affinity_prefix(f"bench-node-{n}") for n in range(procs + 1)]
    for prefix in prefixes + [handle_key("bench.")]:
        for kv in etcd.get_prefix(prefix, keys_only=True)[0]:
            etcd.delete(kv.key)
    Resources(etcd).delete("IPPool", POOL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--per-proc", type=int, default=2500)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=800)
    parser.add_argument("--cidr", default="10.99.0.0/16")
    args = parser.parse_args()
    figures = (args.cidr, args.count, args.procs, args.per_proc, args.threads, args.pairs)
    if os.environ.get("ETCD_ENDPOINTS"):
        run(os.environ["ETCD_ENDPOINTS"], *figures)
        return
    from tests.lab import EtcdServer  # the test suite's throwaway etcd, data in /dev/shm
    with EtcdServer() as server:
        run(server.endpoints, *figures)


if __name__ == "__main__":
    main()
