"""How much a Calico network adds to `docker run`, measured in one run.

Starts a lab Docker host (its own network namespace, dockerd, etcd and the
plugin, as the end-to-end tests do), then, after warm-up runs, times
`docker run --rm busybox true` on a Calico network and on bridge networks,
rotating the order every round so that drift of a shared machine hits every
network alike.

    sudo .venv/bin/python bench/docker_run.py [--runs 30]
    sudo .venv/bin/python bench/docker_run.py --burst 150 --parallel 4 [--rounds 5]

Single runs (default): one container at a time on the default bridge, a
user-defined bridge and the Calico network; medians, the ratio Calico /
user-defined bridge (the target; the default bridge is shown for reference),
and from the plugin's log line per request, per container, RequestAddress +
CreateEndpoint + Join and Leave + DeleteEndpoint + ReleaseAddress, p50/p99.

Burst (--burst N --parallel P): N containers started and removed by P
workers, each running `docker run --rm` back to back, on the Calico network
and on the user-defined bridge, alternately; the wall time of each burst,
medians, the ratio, and each plugin call's p50/p99 under that load.

Not a test.
"""

import argparse
import re
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.calico_host import start_plugin  # noqa: E402
from tests.lab.dockerd import DockerHost  # noqa: E402
from tests.lab.images import import_busybox  # noqa: E402

CALICO, USER_BRIDGE, DEFAULT_BRIDGE = "calinet", "usernet", "bridge"
LABELS = {DEFAULT_BRIDGE: "default bridge network", USER_BRIDGE: "user-defined bridge",
          CALICO: "calico network"}
SETUP = ("IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join")
TEARDOWN = ("NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint", "IpamDriver.ReleaseAddress")
CALL_LINE = re.compile(r" ((?:IpamDriver|NetworkDriver)\.\w+) .*? ok ([\d.]+)ms$", re.MULTILINE)
WARMUP_RUNS = 3
KEPT_LOG = "/tmp/plugin-bench.log"


def docker_run(host, network):
    """Seconds one `docker run --rm busybox true` on `network` takes."""
    start = time.perf_counter()
    result = host.docker("run", "--rm", "--net", network, "busybox", "true")
    elapsed = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"docker run on {network} failed: {result.stderr.strip()}")
    return elapsed


def burst(host, network, containers, parallel):
    """Seconds `parallel` workers take to start and remove `containers`."""
    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: docker_run(host, network), range(containers)))
    return time.perf_counter() - start


def rotated(networks, rounds):
    """Each network once per round, starting one further every round."""
    for r in range(rounds):
        k = r % len(networks)
        yield from networks[k:] + networks[:k]


def measure(host, networks, rounds, warm_up, once):
    """{network: [seconds of each round]} and the plugin's call times in them
    (call_times), after warm_up(network) for each network."""
    for network in networks:
        warm_up(network)
    log = Path(host.plugin.log_path)
    offset = log.stat().st_size
    times = {network: [] for network in networks}
    for network in rotated(networks, rounds):
        times[network].append(once(network))
    with open(log, "rb") as f:
        f.seek(offset)
        return times, call_times(f.read().decode(errors="replace"))


def call_times(log_text):
    """{call: [ms of each successful call, in log order]}."""
    times = {}
    for call, ms in CALL_LINE.findall(log_text):
        times.setdefault(call, []).append(float(ms))
    return times


def per_container(times, calls):
    """The sum of `calls` for each container: with one container at a time,
    the i-th call of each kind is the i-th container's."""
    counts = {call: len(times.get(call, [])) for call in calls}
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"calls do not pair up by container: {counts}")
    return [sum(parts) for parts in zip(*(times[call] for call in calls))]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def p50_p99(values):
    return f"p50 {percentile(values, 50):6.1f} ms  p99 {percentile(values, 99):6.1f} ms"


def print_medians(times, show):
    """Each network's median (with its runs and range) and the ratios;
    show(seconds) formats a time."""
    for network, values in times.items():
        print(f"  {LABELS[network]:24} median {show(statistics.median(values)):>9}"
              f"  ({len(values)} runs, {show(min(values))} - {show(max(values))})")
    medians = {network: statistics.median(values) for network, values in times.items()}
    print(f"  ratio calico/user-defined bridge  {medians[CALICO] / medians[USER_BRIDGE]:.3f}"
          "  (target <= 1.00)")
    if DEFAULT_BRIDGE in medians:
        print(f"  ratio calico/default bridge       {medians[CALICO] / medians[DEFAULT_BRIDGE]:.3f}"
              "  (reference)")


def single_runs(host, args):
    times, calls = measure(
        host, (DEFAULT_BRIDGE, USER_BRIDGE, CALICO), args.runs,
        warm_up=lambda network: [docker_run(host, network) for _ in range(WARMUP_RUNS)],
        once=lambda network: docker_run(host, network))
    print(f"docker run --rm busybox true, one at a time, {WARMUP_RUNS} warm-up runs per network, "
          "then rounds in rotated order:")
    print_medians(times, lambda s: f"{s * 1000:.1f} ms")
    setup, teardown = per_container(calls, SETUP), per_container(calls, TEARDOWN)
    print(f"plugin side, per Calico container ({len(setup)} containers):")
    print(f"  RequestAddress+CreateEndpoint+Join   {p50_p99(setup)}"
          "  (target p50 <= 8 ms, p99 <= 15 ms)")
    print(f"  Leave+DeleteEndpoint+ReleaseAddress  {p50_p99(teardown)}")


def bursts(host, args):
    warmup_size = 2 * args.parallel
    times, calls = measure(
        host, (CALICO, USER_BRIDGE), args.rounds,
        warm_up=lambda network: burst(host, network, warmup_size, args.parallel),
        once=lambda network: burst(host, network, args.burst, args.parallel))
    print(f"{args.burst} containers (docker run --rm busybox true) started and removed "
          f"{args.parallel} at a time, a warm-up burst of {warmup_size} per network, then "
          "the networks alternately:")
    print_medians(times, lambda s: f"{s:.2f} s")
    print("plugin side, each call during the Calico bursts:")
    for call in SETUP + TEARDOWN:
        if calls.get(call):
            print(f"  {call:30} {p50_p99(calls[call])}  ({len(calls[call])} calls)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="single runs per network")
    parser.add_argument("--burst", type=int, nargs="?", const=150, metavar="N",
                        help="burst mode: N containers per burst (default 150)")
    parser.add_argument("--parallel", type=int, default=4, metavar="P",
                        help="containers at a time in a burst (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts per network (default 5)")
    parser.add_argument("--keep-log", action="store_true", help=f"copy the plugin's log to "
                        f"{KEPT_LOG}")
    args = parser.parse_args()
    host = DockerHost("bench", 200)
    try:
        host.start()
        import_busybox(host)
        host.start_etcd()
        host.plugin = start_plugin(host)
        host.docker("network", "create", "--driver", "calico", "--ipam-driver", "calico-ipam",
                    CALICO, check=True)
        host.docker("network", "create", "--driver", "bridge", USER_BRIDGE, check=True)
        if args.burst:
            bursts(host, args)
        else:
            single_runs(host, args)
    finally:
        if args.keep_log and getattr(host, "plugin", None):
            shutil.copy(host.plugin.log_path, KEPT_LOG)
        host.close()


if __name__ == "__main__":
    main()
