"""What counting metrics costs a Docker call, plugin side (not a test).

    sudo .venv/bin/python bench/metrics.py [--rounds 400] [--seed 1]

Starts its own etcd (data in /dev/shm) and the plugin's Flask app with the
IPAM driver, as a gunicorn worker has it.  Each round, in an order drawn
at random (drift of a shared machine falls on both alike), one
RequestAddress + ReleaseAddress pair is answered with the metrics off (as
with CALICO_LIBNETWORK_PROMETHEUS_PORT unset) and one with them on
(multiprocess files, as in a worker: the call's histogram and error
counter, each etcd round trip counted).  Printed: each mode's p50 and p99
per pair, and the ratio on/off of the medians with its 95 % bootstrap
interval over the paired rounds.
"""

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/: ipam.py would shadow

from bench.stats import bootstrap_interval, percentile, ratio_of_medians, verdict  # noqa: E402
from datastore.etcd import Etcd  # noqa: E402
from datastore.resources import Resources  # noqa: E402
from ipam import pools  # noqa: E402
from ipam.allocator import Ipam  # noqa: E402
from ipam.driver import IpamDriver  # noqa: E402
from ipam.pool_cache import PoolCache  # noqa: E402
from metrics import instruments  # noqa: E402
from plugin.app import create_app  # noqa: E402
from plugin.metrics import CALL_NAMES  # noqa: E402

NODE, POOL = "bench-metrics", "bench-pool"


def pair(client, pool_id: str) -> float:
    """Seconds for one RequestAddress + ReleaseAddress, as dockerd sends them."""
    started = time.perf_counter()
    answer = client.post("/IpamDriver.RequestAddress",
                         data=json.dumps({"PoolID": pool_id, "Address": "", "Options": {}}))
    address = answer.get_json()["Address"].split("/")[0]
    client.post("/IpamDriver.ReleaseAddress",
                data=json.dumps({"PoolID": pool_id, "Address": address}))
    return time.perf_counter() - started


def run(endpoints: str, rounds: int, seed: int) -> None:
    etcd = Etcd(endpoints)
    resources = Resources(etcd)
    pools.create_pool(resources, pools.build_pool(POOL, "10.123.0.0/16"))
    cache = PoolCache(etcd).start()
    ipam = IpamDriver(Ipam(etcd, NODE, resources, cache), NODE, resources)
    client = create_app(lambda: {IpamDriver: ipam}).test_client()
    pool_id = client.post("/IpamDriver.RequestPool", data=json.dumps(
        {"AddressSpace": "CalicoGlobalAddressSpace", "Pool": "10.123.0.0/16", "SubPool": "",
         "Options": {}, "V6": False})).get_json()["PoolID"]
    with tempfile.TemporaryDirectory() as directory:
        instruments.enable_plugin(directory, CALL_NAMES)
        on = instruments._on  # the bench switches between the two states each round
        for _ in range(50):  # warm-up: blocks claimed, caches filled
            pair(client, pool_id)
        rng = random.Random(seed)
        rows = []
        for _ in range(rounds):
            times = {}
            for mode in rng.sample(("off", "on"), 2):
                instruments._on = on if mode == "on" else None
                times[mode] = pair(client, pool_id)
            rows.append((times["on"], times["off"]))
        instruments.disable()
    for mode, index in (("off", 1), ("on", 0)):
        costs = [row[index] * 1000 for row in rows]
        print(f"metrics {mode:3}: p50 {statistics.median(costs):.2f} ms, "
              f"p99 {percentile(costs, 99):.2f} ms per RequestAddress + ReleaseAddress")
    low, high = bootstrap_interval(rows, ratio_of_medians, random.Random(seed))
    print(f"ratio on/off of the medians: {ratio_of_medians(rows):.3f} "
          f"(95 % interval {low:.3f}-{high:.3f}; {verdict(low, high, 1.05)}), "
          f"{rounds} paired rounds")
    cache.stop()
    etcd.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from tests.lab import EtcdServer  # the test suite's throwaway etcd, data in /dev/shm
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    with EtcdServer() as server:
        run(server.endpoints, args.rounds, args.seed)


if __name__ == "__main__":
    main()
