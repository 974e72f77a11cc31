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
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # not bench/, whose ipam.py would shadow the package

from datastore.etcd import Etcd  # noqa: E402
from datastore.resources import Resources  # noqa: E402
from ipam import pools  # noqa: E402
from ipam.allocator import Ipam  # noqa: E402
from ipam.blocks import affinity_prefix, block_key, cidr_from_key, handle_key  # noqa: E402
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


def run(endpoints, cidr, count, procs, per_proc):
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
    finally:
        cleanup(etcd, procs)


def cleanup(etcd, procs):
    """Remove the pool, its blocks, and the bench nodes' affinities and handles."""
    pool = pools.get_pool(Resources(etcd), POOL)
    for key in BlockStore(etcd).block_revisions(4):
        if cidr_from_key(key) in pool.cidr:
            etcd.delete(block_key(cidr_from_key(key)))
    for n in range(procs + 1):
        etcd.delete_prefix(affinity_prefix(f"bench-node-{n}"))
    etcd.delete_prefix(handle_key("bench."))
    Resources(etcd).delete("IPPool", POOL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--per-proc", type=int, default=2500)
    parser.add_argument("--cidr", default="10.99.0.0/16")
    args = parser.parse_args()
    if os.environ.get("ETCD_ENDPOINTS"):
        run(os.environ["ETCD_ENDPOINTS"], args.cidr, args.count, args.procs, args.per_proc)
        return
    from tests.lab import EtcdServer  # the test suite's throwaway etcd, data in /dev/shm
    with EtcdServer() as server:
        run(server.endpoints, args.cidr, args.count, args.procs, args.per_proc)


if __name__ == "__main__":
    main()
