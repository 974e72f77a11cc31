"""Names across hosts, measured in one run of the lab of tests/e2e/names_lab.py
(two Docker hosts, the plugin, the test's own upstream nameserver), after the
cost of one change in the agent's name index (no lab, no root).

    sudo .venv/bin/python bench/names.py [--containers 20] [--lookups 200]
        [--index-sizes 600,30000] [--index-networks 20] [--index-containers 30]
        [--index-only] [--upstream-delays 0,1,10] [--lab-index 30000]

- one endpoint change in the name index (agent/names/index.py): the index
  holds N endpoints (each with a name and a short id, as the driver writes
  them, across --index-networks networks), then --index-containers
  containers each go through the driver's four writes, each its own watch
  batch as the agent's watch hands it over (on_change, then batch_done): the
  endpoint created, its sandbox annotation (no answer changes), its DNS-name
  annotations, its deletion.  CPU time (time.process_time) of on_change +
  batch_done, median and max per write; and of the snapshot that loaded the
  N endpoints; and the time the agent's responder takes to answer a
  question for a Calico name from that index (local_answer: parse, lookup,
  reply), CPU time p50/p99 of 2,000;
- start-to-resolvable: from `docker run` on h2 to the new container's name
  answering from a container on h1 (through Docker's embedded DNS, as
  `ping` asks), p50/p99; target p99 < 2 s;
- then --lab-index named endpoints of another node (half of them in net1)
  are written to the lab's etcd, and the bench waits until the last one
  answers on h1: the agent's index holds them all;
- lookup latency from that container through 127.0.0.11: a Calico name (of
  a container on h2, and of one of those endpoints; target p99 < 1 ms), a
  forwarded name (answered by the upstream) for each of --upstream-delays
  (ms the upstream waits before it answers: a nameserver farther away than
  the lab's veth), and the same forwarded names with the plugin's DNS
  handling off (its agent killed, so the kernel drops the interception
  table, and not restarted meanwhile): target forwarded <= 1.1x direct.

The lookups run in a probe process inside the h1 container's network
namespace (python with dnslib, CLOCK_MONOTONIC shared with this process).
Not a test.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dnslib import DNSRecord  # noqa: E402

from agent.names.index import NameIndex  # noqa: E402
from agent.names.responder import local_answer  # noqa: E402
from driver.endpoints import (DEFAULT_MAC, SANDBOX_ANNOTATION, names_annotations,  # noqa: E402
                              workload_endpoint)
from tests.e2e.calico_host import REPO, docker  # noqa: E402
from tests.e2e.names_lab import EXTERNAL, machine_nameserver, names_lab  # noqa: E402
from tests.introspect import feed  # noqa: E402
from tests.lab.common import in_netns, wait_until  # noqa: E402
from tests.lab.fixtures import HostFactory  # noqa: E402

PROBE = r'''
import json, sys, time
from dnslib import DNSRecord
def ask(name):
    try:
        reply = DNSRecord.parse(DNSRecord.question(name).send("127.0.0.11", 53, timeout=2))
        return bool(reply.rr)
    except Exception:
        return False
for line in sys.stdin:
    verb, name, n = line.split()
    if verb == "wait":  # until the name resolves (at most n seconds)
        deadline = time.monotonic() + float(n)
        while not ask(name) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps(time.monotonic()), flush=True)
    else:  # "time": n lookups, each one's seconds
        times = []
        for _ in range(int(n)):
            start = time.monotonic()
            ok = ask(name)
            times.append(time.monotonic() - start if ok else None)
        print(json.dumps(times), flush=True)
'''


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def probe_in(host, container):
    pid = docker(host, "inspect", "-f", "{{.State.Pid}}", container)
    return subprocess.Popen(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", PROBE],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})


def ask(probe, verb, name, n):
    probe.stdin.write(f"{verb} {name} {n}\n")
    probe.stdin.flush()
    return json.loads(probe.stdout.readline())


def lookups(probe, name, n):
    times = ask(probe, "time", name, n)
    failed = sum(t is None for t in times)
    ok = [t * 1000 for t in times if t is not None]
    return ok, failed


def agent_of(plugin):
    found = subprocess.run(["pgrep", "-P", str(plugin.pid), "-f", "plugin.cli agent"],
                           capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def container_writes(i: int, networks: int, node: str = "bench") -> list:
    """The driver's writes of container i's endpoint, in order: (step, key, value)."""
    network = f"net{i % networks}"
    eid = hashlib.sha256(f"{node}/{i}".encode()).hexdigest()
    res = workload_endpoint(node, eid, hashlib.sha256(network.encode()).hexdigest(),
                            [f"{ipaddress.IPv4Address('10.128.0.0') + i}/32"], DEFAULT_MAC,
                            [network], network_name=network)
    created = res.to_json().encode()
    res.annotations[SANDBOX_ANNOTATION] = f"/var/run/docker/netns/{eid[:12]}"
    joined = res.to_json().encode()
    res.annotations.update(names_annotations(network, [f"workload-{i}", eid[:12]]))
    return [("created", res.key, created), ("sandbox annotation", res.key, joined),
            ("DNS-name annotations", res.key, res.to_json().encode()),
            ("deleted", res.key, None)]


def index_figures(size: int, networks: int, containers: int) -> None:
    records = [container_writes(i, networks)[2][1:] for i in range(size)]  # named
    index = NameIndex()
    started = time.process_time()
    for key, value in records:
        feed(index, key, value)
    index.batch_done(True, True)
    loaded = time.process_time() - started
    cpu = {}
    for i in range(size, size + containers):
        for step, key, value in container_writes(i, networks):
            started = time.process_time()
            index.batch_done(feed(index, key, value), False)
            cpu.setdefault(step, []).append(time.process_time() - started)
    question = DNSRecord.question(f"workload-{networks}").pack()  # in net0, as is endpoint 0
    answers = []
    for _ in range(2000):
        started = time.thread_time()  # CPU: a busy machine's preemptions left out
        assert local_answer(index.table, "10.128.0.0", question) is not None
        answers.append((time.thread_time() - started) * 1000)
    print(f"name index, {size} endpoints in {networks} networks: snapshot (on_change of each, "
          f"batch_done) {loaded * 1000:.1f} ms CPU; a Calico name answered (local_answer), CPU "
          f"p50 {percentile(answers, 50):.3f} ms, p99 {percentile(answers, 99):.3f} ms; "
          f"then {containers} containers, CPU of on_change + batch_done per write:")
    for step, seconds in cpu.items():
        print(f"   {step:22s} median {statistics.median(seconds) * 1000:8.3f} ms  "
              f"max {max(seconds) * 1000:8.3f} ms")


def write_index(etcd_url: str, count: int) -> None:
    """Named endpoints 0..count-1 of node "bench", in net0 and net1, as the
    driver leaves them once joined (run inside h1's namespace, etcd's)."""
    from bench.policy import write
    from datastore.etcd import Etcd
    etcd = Etcd(etcd_url)
    write(etcd, [container_writes(i, 2)[2][1:] for i in range(count)])
    etcd.close()


def fill_index(lab, probe, count: int) -> str:
    """Write the endpoints, wait until h1 answers the last in net1; its name."""
    started = time.monotonic()
    subprocess.run(in_netns([sys.executable, __file__, "--write-index", str(count),
                             "--etcd", lab.h1.etcd.endpoints], lab.h1.netns),
                   check=True, env={**os.environ, "PYTHONPATH": REPO})
    written = time.monotonic() - started
    last = f"workload-{count - 1 if count % 2 == 0 else count - 2}"
    answered = ask(probe, "wait", last, 120) - started
    print(f"{count} named endpoints written to etcd in {written:.1f} s; h1 answered the last "
          f"one {answered:.1f} s after the first write")
    return last


def forwarded_name(delay_ms: int) -> str:
    return f"delay-{delay_ms}.{EXTERNAL[0]}" if delay_ms else EXTERNAL[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--index-sizes", default="600,30000")
    parser.add_argument("--index-networks", type=int, default=20)
    parser.add_argument("--index-containers", type=int, default=30)
    parser.add_argument("--index-only", action="store_true", help="no lab: the index only")
    parser.add_argument("--upstream-delays", default="0,1,10",
                        help="ms the upstream waits before answering, one run of each")
    parser.add_argument("--lab-index", type=int, default=30000,
                        help="named endpoints in the lab agent's index for the lookups")
    parser.add_argument("--write-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--etcd", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_index:
        return write_index(args.etcd, args.write_index)
    upstream_delays = [int(ms) for ms in args.upstream_delays.split(",")]
    for size in (int(n) for n in args.index_sizes.split(",")):
        index_figures(size, args.index_networks, args.index_containers)
    if args.index_only:
        return
    nameserver = machine_nameserver()
    if nameserver is None:
        raise SystemExit("/etc/resolv.conf has no IPv4 non-loopback nameserver")
    factory = HostFactory()
    try:
        with names_lab(factory, nameserver) as lab:
            h1, h2 = lab.h1, lab.h2
            docker(h1, "run", "-tid", "--net", "net1", "--name", "client", "busybox")
            probe = probe_in(h1, "client")
            delays = []
            for i in range(args.containers):
                name = f"bench-{i}"
                started = time.monotonic()
                docker(h2, "run", "-tid", "--net", "net1", "--name", name, "busybox")
                delays.append(ask(probe, "wait", name, 10) - started)
            print(f"start-to-resolvable over {len(delays)} containers (from docker run on h2 "
                  f"to the name answering on h1): p50 {percentile(delays, 50):.2f} s, "
                  f"p99 {percentile(delays, 99):.2f} s (target p99 < 2 s)")

            indexed = fill_index(lab, probe, args.lab_index) if args.lab_index else None
            calico, _ = lookups(probe, "bench-0", args.lookups)
            calico_indexed = lookups(probe, indexed, args.lookups)[0] if indexed else []
            forwarded = {ms: lookups(probe, forwarded_name(ms), args.lookups)
                         for ms in upstream_delays}
            # DNS handling off: stop the plugin's supervisor, kill its agent.
            plugin = lab.plugins["h1"]
            os.kill(plugin.pid, signal.SIGSTOP)
            try:
                os.kill(agent_of(plugin), signal.SIGKILL)
                wait_until(lambda: "calico-libnetwork-dns" not in h1.run_in_netns(
                    "nft list tables").stdout, 5, 0.02)
                direct = {ms: lookups(probe, forwarded_name(ms), args.lookups)
                          for ms in upstream_delays}
            finally:
                os.kill(plugin.pid, signal.SIGCONT)
            probe.stdin.close()
            probe.wait(5)
            rows = [("Calico name (h2's container)", calico)]
            if indexed:
                rows.append((f"Calico name ({indexed})", calico_indexed))
            for ms in upstream_delays:
                rows += [(f"forwarded, upstream +{ms} ms", forwarded[ms][0]),
                         (f"direct (names off), +{ms} ms", direct[ms][0])]
            print(f"lookups with {args.lab_index} more named endpoints in the index "
                  "(target: Calico names p99 < 1 ms)")
            for label, values in rows:
                print(f"{label:34s} p50 {percentile(values, 50):6.2f} ms  "
                      f"p99 {percentile(values, 99):6.2f} ms  ({len(values)} lookups)")
            for ms in upstream_delays:
                ratio = statistics.median(forwarded[ms][0]) / statistics.median(direct[ms][0])
                print(f"upstream +{ms} ms: forwarded / direct (medians) {ratio:.2f} (target "
                      f"<= 1.1); failed lookups: forwarded {forwarded[ms][1]}, "
                      f"direct {direct[ms][1]}")
    finally:
        factory.close()


if __name__ == "__main__":
    main()
