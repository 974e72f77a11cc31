"""How much a Calico network adds to `docker run`, measured in one run.

Starts a lab Docker host (its own network namespace, dockerd, etcd and the
plugin, as the end-to-end tests do), then times `docker run --rm busybox true`
alternately on the default bridge network and on a Calico network, and reads
the plugin's own per-request times (its log line per call) for
RequestAddress + CreateEndpoint + Join of each Calico container.

    sudo .venv/bin/python bench/docker_run.py [--runs 30]

Prints medians, the ratio calico/bridge, and plugin-side p50/p99.  Not a test.
"""

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.calico_host import start_plugin  # noqa: E402
from tests.lab.dockerd import DockerHost  # noqa: E402
from tests.lab.images import import_busybox  # noqa: E402

# The default bridge network is the baseline the target is set against; a
# user-defined bridge network shows what any non-default network costs in
# dockerd (embedded DNS, for one).
NETWORKS = ("bridge", "usernet", "calinet")
PLUGIN_CALLS = ("IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join")


def timed_run(host, network):
    start = time.perf_counter()
    result = host.docker("run", "--rm", "--net", network, "busybox", "true")
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"docker run on {network} failed: {result.stderr}")
    return elapsed


def plugin_times(log_text):
    """Sum RequestAddress + CreateEndpoint + Join per container, in ms.

    Calls come in that order for each container, one container at a time."""
    per_container, current = [], 0.0
    for line in log_text.splitlines():
        for call in PLUGIN_CALLS:
            if f" {call} " in line and " ok " in line:
                ms = float(re.search(r" ok ([\d.]+)ms", line).group(1))
                current += ms
                if call == "NetworkDriver.Join":
                    per_container.append(current)
                    current = 0.0
    return per_container


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30, help="docker runs per network")
    parser.add_argument("--keep-log", action="store_true")
    args = parser.parse_args()
    host = DockerHost("bench", 200)
    try:
        host.start()
        import_busybox(host)
        host.start_etcd()
        plugin = start_plugin(host)
        host.docker("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam",
                    "calinet")
        host.docker("network", "create", "--driver", "bridge", "usernet")
        for network in NETWORKS:  # warm up caches on both paths
            timed_run(host, network)
        log_offset = len(Path(plugin.log_path).read_text())
        times = {network: [] for network in NETWORKS}
        for _ in range(args.runs):
            for network in NETWORKS:
                times[network].append(timed_run(host, network))
        plugin_ms = plugin_times(Path(plugin.log_path).read_text()[log_offset:])
    finally:
        if len(sys.argv) > 1 and "--keep-log" in sys.argv:
            print(Path(plugin.log_path).read_text(), file=open("/tmp/plugin-bench.log", "w"))
        host.close()

    bridge, user, calico = (statistics.median(times[n]) for n in NETWORKS)
    print(f"docker run --rm busybox true, {args.runs} runs each, alternating:")
    print(f"  default bridge network   median {bridge * 1000:7.1f} ms")
    print(f"  user-defined bridge      median {user * 1000:7.1f} ms")
    print(f"  calico network           median {calico * 1000:7.1f} ms")
    print(f"  ratio calico/default bridge       {calico / bridge:.3f}  (target <= 1.10)")
    print(f"  ratio calico/user-defined bridge  {calico / user:.3f}")
    if plugin_ms:
        print(f"plugin-side RequestAddress+CreateEndpoint+Join over {len(plugin_ms)} containers:")
        print(f"  p50 {percentile(plugin_ms, 50):.1f} ms   p99 {percentile(plugin_ms, 99):.1f} ms"
              "  (target p50 < 15 ms)")


if __name__ == "__main__":
    main()
