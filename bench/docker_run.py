"""How much a Calico network adds to `docker run`, and how sure that figure is.

Starts a lab Docker host (its own network namespace, dockerd, etcd and the
plugin started as `calico-libnetwork run` with its defaults: node agent,
policy and names on, as a user starts it), then times `docker run --rm
busybox true` on a Calico network and on a user-defined bridge.

    sudo .venv/bin/python bench/docker_run.py      # 450 rounds: 5-7 minutes
    sudo .venv/bin/python bench/docker_run.py --burst 150 --parallel 4 [--rounds 5]
    sudo .venv/bin/python bench/docker_run.py --background 1000 --runs 100

Single runs (default): after warm-up runs, --runs rounds; each round starts
one container on each network, in an order drawn at random (--seed repeats
it), so that drift of a shared machine falls on both alike.  Printed: each
network's median, the ratio Calico / user-defined bridge (ratio of the
medians) with its 95 % interval (percentile bootstrap over the paired
rounds) and whether it is below 1.00 with that confidence; and, from the
plugin's log line per request, per container, RequestAddress +
CreateEndpoint + Join (each part too) and Leave + DeleteEndpoint +
ReleaseAddress, p50 (with its 95 % bootstrap interval) and p99; the HTTP
calls per container and what a no-op call's round trip costs; and the CPU
time the plugin, its node agent and etcd used per Calico container.
--default-bridge adds Docker's default bridge as a reference.

Burst (--burst N --parallel P): N containers started and removed by P
workers, each running `docker run --rm` back to back, on the Calico network
and on the user-defined bridge, in random order each round; the wall time of
each burst, the ratio with its interval (few rounds: a wide one), and each
plugin call's p50/p99 under that load.

--background N first starts N containers (`sleep`) on the Calico network,
8 at a time, and prints the memory of the plugin (gunicorn's arbiter and
workers) and of its node agent at 0, 100, 1,000, ... and N of them (RSS, and
PSS, which shares the workers' common pages out among them; target < 150 MB
in all); the measurement then runs with them running.

--plugin-env KEY=VALUE (repeatable) changes the plugin's configuration, to
see what a part costs (e.g. CALICO_LIBNETWORK_POLICY=false); the figures
that count are those of the defaults.  Each run prints when it ran, how long
it took, and the machine's load average before and after.

Not a test.
"""

import argparse
import os
import random
import re
import shutil
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import bootstrap_interval, percentile, ratio_of_medians, verdict  # noqa: E402
from plugin.cli.probe import _UnixConnection as UnixConnection  # noqa: E402
from tests.e2e.calico_host import CALICO as CALICO_OPTIONS  # noqa: E402
from tests.e2e.calico_host import ENTRY_POINT, start_plugin  # noqa: E402
from tests.lab.dockerd import DockerHost, versions  # noqa: E402
from tests.lab.images import import_busybox  # noqa: E402

CALICO, USER_BRIDGE, DEFAULT_BRIDGE = "calinet", "usernet", "bridge"
LABELS = {DEFAULT_BRIDGE: "default bridge network", USER_BRIDGE: "user-defined bridge",
          CALICO: "calico network"}
SETUP = ("IpamDriver.RequestAddress", "NetworkDriver.CreateEndpoint", "NetworkDriver.Join")
TEARDOWN = ("NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint", "IpamDriver.ReleaseAddress")
CALL_LINE = re.compile(r" ((?:IpamDriver|NetworkDriver)\.\w+) .*? ok ([\d.]+)ms$", re.MULTILINE)
WARMUP_RUNS = 3
TARGET_RATIO = 1.00
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


class Measured(NamedTuple):
    rounds: list  # {network: seconds} of each round
    calls: dict  # the plugin's call times in them (call_times)
    cpu: dict  # CPU seconds each Calico process used in them (cpu_seconds)


def measure(host, networks, rounds, warm_up, once, rng) -> Measured:
    """Each network once per round, in an order drawn from `rng`, after
    warm_up(network) for each network."""
    for network in networks:
        warm_up(network)
    log = Path(host.plugin.log_path)
    offset = log.stat().st_size
    processes = calico_processes(host)
    cpu_before = cpu_seconds(processes)
    results = []
    for _ in range(rounds):
        order = rng.sample(networks, len(networks))
        results.append({network: once(network) for network in order})
    cpu_after = cpu_seconds(processes)
    with open(log, "rb") as f:
        f.seek(offset)
        calls = call_times(f.read().decode(errors="replace"))
    return Measured(results, calls, {name: cpu_after[name] - cpu_before[name]
                                     for name in processes})


def calico_processes(host) -> dict[str, list[int]]:
    """The pids of the plugin (gunicorn's arbiter and workers), of its node
    agent and of etcd."""
    children = [int(pid) for task in Path(f"/proc/{host.plugin.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    agent = [pid for pid in children if b"plugin.cli\0agent" in _cmdline(pid)]
    return {"plugin": [host.plugin.pid, *(p for p in children if p not in agent)],
            "node agent": agent, "etcd": [host.etcd.process.pid]}


def _cmdline(pid) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_seconds(processes) -> dict[str, float]:
    """CPU time (user + system, with reaped children such as the agent's
    nft) of each group of pids."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pids in processes.items():
        used[name] = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone (a restarted agent): its time is lost, not wrong
            used[name] += sum(int(f) for f in fields[11:15]) / tick
    return used


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


def p50_p99(values, rng):
    low, high = bootstrap_interval(values, statistics.median, rng)
    return (f"p50 {percentile(values, 50):5.1f} ms ({low:.1f}-{high:.1f})"
            f"  p99 {percentile(values, 99):5.1f} ms")


def print_comparison(rounds, show, rng):
    """Each network's median (with its runs and p10-p90) and the ratio
    Calico / user-defined bridge with its interval; show(seconds) formats a
    time."""
    for network in rounds[0]:
        values = [r[network] for r in rounds]
        print(f"  {LABELS[network]:24} median {show(statistics.median(values)):>9}"
              f"  ({len(values)} runs, p10-p90 {show(percentile(values, 10))} - "
              f"{show(percentile(values, 90))})")
    pairs = [(r[CALICO], r[USER_BRIDGE]) for r in rounds]
    low, high = bootstrap_interval(pairs, ratio_of_medians, rng)
    print(f"  ratio calico/user-defined bridge  {ratio_of_medians(pairs):.3f}, "
          f"95% interval {low:.3f}-{high:.3f}: {verdict(low, high, TARGET_RATIO)}")
    print(f"    (ratio of the medians; percentile bootstrap over the {len(pairs)} paired "
          "rounds, resampled whole)")
    if DEFAULT_BRIDGE in rounds[0]:
        reference = [(r[CALICO], r[DEFAULT_BRIDGE]) for r in rounds]
        print(f"  ratio calico/default bridge       {ratio_of_medians(reference):.3f}"
              "  (reference)")


def single_runs(host, args, rng):
    networks = [USER_BRIDGE, CALICO] + ([DEFAULT_BRIDGE] if args.default_bridge else [])
    rounds, calls, cpu = measure(
        host, networks, args.runs,
        warm_up=lambda network: [docker_run(host, network) for _ in range(WARMUP_RUNS)],
        once=lambda network: docker_run(host, network), rng=rng)
    print(f"docker run --rm busybox true, one at a time: {WARMUP_RUNS} warm-up runs per "
          f"network, then {args.runs} rounds, each network once per round in random order:")
    print_comparison(rounds, lambda s: f"{s * 1000:.1f} ms", rng)
    setup, teardown = per_container(calls, SETUP), per_container(calls, TEARDOWN)
    print(f"plugin side, per Calico container ({len(setup)} containers; the plugin's log "
          "line per request; 95% bootstrap interval of p50):")
    print(f"  RequestAddress+CreateEndpoint+Join   {p50_p99(setup, rng)}"
          "  (target p50 <= 8 ms, p99 <= 15 ms)")
    for call in SETUP:
        print(f"    {call.split('.')[1]:34} {p50_p99(calls[call], rng)}")
    print(f"  Leave+DeleteEndpoint+ReleaseAddress  {p50_p99(teardown, rng)}")
    hops = http_round_trips(host)
    print(f"  HTTP: {sum(map(len, calls.values())) / len(setup):.1f} calls per container; "
          f"a no-op call (GetCapabilities) round trip {p50_p99(hops, rng)}")
    print_cpu(cpu, len(setup))


def bursts(host, args, rng):
    warmup_size = 2 * args.parallel
    rounds, calls, cpu = measure(
        host, [CALICO, USER_BRIDGE], args.rounds,
        warm_up=lambda network: burst(host, network, warmup_size, args.parallel),
        once=lambda network: burst(host, network, args.burst, args.parallel), rng=rng)
    print(f"{args.burst} containers (docker run --rm busybox true) started and removed "
          f"{args.parallel} at a time, a warm-up burst of {warmup_size} per network, then "
          f"{args.rounds} rounds, each network once per round in random order:")
    print_comparison(rounds, lambda s: f"{s:.2f} s", rng)
    print("plugin side, each call during the Calico bursts:")
    for call in SETUP + TEARDOWN:
        if calls.get(call):
            print(f"  {call:30} {p50_p99(calls[call], rng)}  ({len(calls[call])} calls)")
    print_cpu(cpu, args.rounds * args.burst)


def http_round_trips(host, calls=300) -> list[float]:
    """Milliseconds of each no-op call on one kept-alive connection to
    calico.sock, as dockerd makes them: what the HTTP hop costs a call."""
    conn = UnixConnection(str(Path(host.plugin_dir) / "calico.sock"), timeout=30)
    times = []
    try:
        for _ in range(calls):
            start = time.perf_counter()
            conn.request("POST", "/NetworkDriver.GetCapabilities", body=b"{}")
            conn.getresponse().read()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        conn.close()
    return times


def print_cpu(cpu, containers):
    print("CPU time per Calico container (the whole measurement's, over its Calico "
          "containers; the machine has " f"{os.cpu_count()} CPUs):")
    print("  " + ", ".join(f"{name} {seconds / containers * 1000:.1f} ms"
                           for name, seconds in cpu.items()))


def memory(processes) -> dict[str, tuple[int, int]]:
    """(RSS, PSS) bytes of each group of pids but etcd."""
    found = {}
    for name, pids in processes.items():
        if name == "etcd":
            continue
        rss = pss = 0
        for pid in pids:
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines()[1:])
            rss += int(fields["Rss"].split()[0]) * 1024
            pss += int(fields["Pss"].split()[0]) * 1024
        found[name] = (rss, pss)
    return found


def background(host, count) -> list[str]:
    """Start `count` sleeping containers on the Calico network, printing the
    plugin's and agent's memory at 0, 100, 1,000, ... and count of them, and
    each failed `docker run`; their ids."""
    checkpoints = sorted({c for c in (0, 100, 1000, 10000) if c < count} | {count})
    started, ids, failures = 0, [], Counter()

    def start(_):
        result = host.docker("run", "-d", "--net", CALICO, "busybox", "sleep", "1d")
        if result.returncode:
            failures[result.stderr.strip()] += 1
        else:
            ids.append(result.stdout.strip())

    print(f"memory with N containers running on the Calico network (target < 150 MB "
          f"in all; {machine_state()}):")
    for checkpoint in checkpoints:
        began = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(start, range(checkpoint - started)))
        took = (f", {checkpoint - started} started in {time.monotonic() - began:.0f} s"
                if checkpoint > started else "")
        time.sleep(5)  # the agent (at 0: its start) and its policy catch up
        started = checkpoint
        found = memory(calico_processes(host))
        rss, pss = (sum(v[i] for v in found.values()) / 2**20 for i in (0, 1))
        print(f"  {checkpoint:5d}: " + ", ".join(
            f"{name} RSS {r / 2**20:.0f} MB, PSS {p / 2**20:.0f} MB"
            for name, (r, p) in found.items())
            + f"; in all RSS {rss:.0f} MB, PSS {pss:.0f} MB{took}; {machine_state()}")
    for error, times in failures.items():
        print(f"  docker run -d failed {times} times: {error}")
    return ids


def remove(host, ids):
    """docker rm -f, 50 at a time (the lab's cleanup gives all of them 60 s)."""
    for i in range(0, len(ids), 50):
        host.docker("rm", "-f", *ids[i:i + 50], timeout=600)


def plugin_env(pairs) -> dict:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--plugin-env takes KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def machine_state() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 150 rounds left a ratio of 0.985 undecided (interval 0.96-1.01); 450 decide it.
    parser.add_argument("--runs", type=int, default=450,
                        help="rounds of single runs, one per network each (default 450)")
    parser.add_argument("--default-bridge", action="store_true",
                        help="also time Docker's default bridge (a reference)")
    parser.add_argument("--burst", type=int, nargs="?", const=150, metavar="N",
                        help="burst mode: N containers per burst (default 150)")
    parser.add_argument("--parallel", type=int, default=4, metavar="P",
                        help="containers at a time in a burst (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="bursts per network (default 5)")
    parser.add_argument("--seed", type=int, help="seed of the order and the bootstrap "
                        "(default: drawn, and printed)")
    parser.add_argument("--plugin-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the plugin other than its default (repeatable)")
    parser.add_argument("--background", type=int, default=0, metavar="N",
                        help="N containers running on the Calico network first")
    parser.add_argument("--keep-log", action="store_true", help=f"copy the plugin's log to "
                        f"{KEPT_LOG}")
    args = parser.parse_args()
    env = plugin_env(args.plugin_env)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    started = time.monotonic()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {versions()[0]}, "
          f"{os.cpu_count()} CPUs, {machine_state()}, seed {seed}")
    print("plugin: calico-libnetwork run, "
          + (" ".join(args.plugin_env) if env else "defaults (node agent, policy, names on)"))
    host, ids = DockerHost("bench", 200), []
    try:
        host.start()
        import_busybox(host)
        host.start_etcd()
        host.plugin = start_plugin(host, command=(ENTRY_POINT,), **env)
        host.docker("network", "create", *CALICO_OPTIONS, CALICO, check=True)
        host.docker("network", "create", "--driver", "bridge", USER_BRIDGE, check=True)
        if args.background:
            ids = background(host, args.background)
        (bursts if args.burst else single_runs)(host, args, random.Random(seed))
    finally:
        if args.keep_log and getattr(host, "plugin", None):
            shutil.copy(host.plugin.log_path, KEPT_LOG)
        remove(host, ids)
        host.close()
    print(f"took {time.monotonic() - started:.0f} s; {machine_state()}")


if __name__ == "__main__":
    main()
