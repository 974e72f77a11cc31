"""Policy engine benchmark (not a test; prints figures).

    .venv/bin/python bench/policy.py [--quick] [--parts 1,2,3,4,5] [--profile]

Needs root, nft, busybox and etcd.  Everything runs in network namespaces
the bench makes (and deletes, with every process inside, on exit or Ctrl-C);
etcd keeps its data in /dev/shm.  The cluster is generated: endpoints carry
labels app=app<i % 25> and role=r<(i / 25) % 4> and one network's profile
(net<n>, as the driver writes it: ingress from has(net<n>)); policy p selects
app == 'app<p % 25>', allows TCP to two ports and UDP 53 from source
selectors, TCP 443 out to a destination selector, and passes the rest to
the profiles.

1. Programming: --endpoints local endpoints across --networks networks
   with --policies GlobalNetworkPolicies, from an empty engine to the table
   written in a throw-away namespace (real nft), --repeats times, with
   where the CPU goes; then one incremental change at that size: a local
   endpoint added, a remote endpoint added, a port-range rule changed (a
   policy's rule holding a port and the range 9000:9100), median and max of
   --repeats.  Wall time and CPU time (the process's, libnftables included;
   the machine may be shared).  Targets: 1,000 endpoints in < 0.3 s, a local
   endpoint < 5 ms of CPU, a port-range rule < 2 ms of CPU.
2. Change to enforcement: a real etcd and an agent-like process (Follower and
   PolicyEngine) in namespace "host 2", cluster as in 1; the bench writes
   --changes policy changes, remote endpoints and local endpoints to etcd,
   one at a time, and takes the time until the agent's status file is
   rewritten (after its nft transaction) with the change in the table, checked by
   nft (--poll nft: poll nft every 5 ms instead, which competes with the
   agent for the CPUs): p50 and p99, and where the agent's syncs spend
   their time.  Target p99 < 1 s.
3. Datapath: two workloads on cali veths (one network), ping and TCP
   request/response (one connection; and connect + request + close) with
   filtering off, on (the profile), and on with the cluster of 1 around
   them, and with a table holding only a conntrack rule (conntrack's share
   of the cost), each mode once per round in random order (--seed), over
   --rounds rounds; ratios of the medians, paired by round, with bootstrap
   intervals (bench/stats.py).  Target: on / ct only <= 1.05.
4. Large cluster: --remote endpoints of --nodes other nodes, --big-networks
   profiles, the policies and ~10 local endpoints in a real etcd; a fresh
   process takes a full sync through the real snapshot path
   (datastore.follower.snapshot, then batch_done): its time and where it goes,
   the growth of its peak RSS (VmHWM), one change at that size, and in a
   second fresh process the tracemalloc peak.  Targets: < 10 s, < 300 MB.

5. One container's life, as the agent sees it: --lifecycle-endpoints local
   and as many remote endpoints (--networks, --policies as in 1) in the
   policy engine and the name index, fed as the agent's watch feeds them,
   in a throw-away namespace (real nft); then --lifecycles times the four
   writes the driver makes for one container, each its own watch batch:
   the endpoint created (CreateEndpoint), its sandbox annotation (Join),
   its DNS-name annotations, its deletion.  For each: the agent's CPU time
   (time.process_time, plus any nft child's), per view, and how many
   nft scripts it sent.  Target: nothing for the annotations.

--profile adds cProfile's top entries for the full programming of 1, a
local endpoint added in 1, and the full sync of 4.
"""

import argparse
import cProfile
import contextlib
import functools
import hashlib
import ipaddress
import json
import os
import pstats
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repository, not bench/

from agent import antispoofing  # noqa: E402
from agent.policy import nft  # noqa: E402
from agent.policy.compiler import Compiler, set_name  # noqa: E402
from agent.policy.engine import PolicyEngine  # noqa: E402
from agent.policy.membership import Membership  # noqa: E402
from agent.policy.state import PolicyState  # noqa: E402
from bench.stats import bootstrap_interval, ratio_of_medians, verdict  # noqa: E402
from datastore import follower  # noqa: E402
from datastore.etcd import _PAGE as PAGE  # noqa: E402
from datastore.etcd import Etcd  # noqa: E402
from datastore.records import WORKLOAD_ENDPOINTS  # noqa: E402
from datastore.resources import Resource  # noqa: E402
from datastore.selector import parse  # noqa: E402
from driver.endpoints import (DEFAULT_MAC, SANDBOX_ANNOTATION, host_ifname,  # noqa: E402
                              names_annotations, network_profile, workload_endpoint)
from tests import introspect  # noqa: E402
from tests.introspect import feed  # noqa: E402

LOCAL = "bench-local"  # the node whose endpoints are local in 1 and 3
HOST2 = "host-2"  # the agent's node in 2 and 4
APPS, ROLES = 25, 4
TXN_OPS = 100  # etcd allows 128 operations per transaction by default
TABLE = f"{nft.FAMILY} {nft.TABLE}"
ECHO_PORT = 7777
CT_TABLE = "inet calico-bench-ct"
CT_ONLY = f"""add table {CT_TABLE}
add chain {CT_TABLE} forward {{ type filter hook forward priority filter; policy accept; }}
add rule {CT_TABLE} forward ct state established,related accept
"""
POLL = 0.005

# name: (full run, --quick)
SIZES = {
    "endpoints": (1000, 100), "networks": (50, 10), "policies": (100, 20),
    "repeats": (5, 3), "changes": (50, 5), "rounds": (10, 2), "pings": (200, 20),
    "requests": (2000, 200), "connects": (300, 50), "remote": (30000, 3000),
    "nodes": (1000, 100), "big_networks": (200, 20), "big_local": (10, 10),
    "lifecycle_endpoints": (300, 100), "lifecycles": (50, 10),
}


# --- the generated cluster --------------------------------------------------

def endpoint_id(node: str, i: int) -> str:
    return hashlib.sha256(f"{node}/{i}".encode()).hexdigest()


def address(base: str, i: int) -> str:
    return str(ipaddress.IPv4Address(base) + i + 1)


def wep(node: str, i: int, network: str, ip: str, labels=None) -> tuple[str, bytes]:
    eid = endpoint_id(node, i)
    res = workload_endpoint(node, eid, hashlib.sha256(network.encode()).hexdigest(),
                            [f"{ip}/32"], DEFAULT_MAC, [network])
    res.labels.update({"app": f"app{i % APPS}", "role": f"r{(i // APPS) % ROLES}"}
                      if labels is None else labels)
    return res.key, res.to_json().encode()


def local_wep(node: str, i: int, networks: int) -> tuple[str, bytes]:
    return wep(node, i, f"net{i % networks}", address("10.64.0.0", i))


def remote_wep(i: int, nodes: int, networks: int) -> tuple[str, bytes]:
    return wep(f"node-{i % nodes}", i, f"net{i % networks}", address("10.128.0.0", i))


def profile(n: int) -> tuple[str, bytes]:
    res = network_profile(f"net{n}")
    return res.key, res.to_json().encode()


def policy_name(p: int) -> str:
    return f"default.bench-{p}"


def policy(p: int, networks: int, port: int | None = None) -> tuple[str, bytes]:
    spec = {
        "order": p,
        "selector": f"app == 'app{p % APPS}'",
        "types": ["Ingress", "Egress"],
        "ingress": [
            {"action": "Allow", "protocol": "TCP",
             "source": {"selector": f"role == 'r{p % ROLES}' && has(net{7 * p % networks})"},
             "destination": {"ports": [port or 8000 + p, "9000:9100"]}},
            {"action": "Allow", "protocol": "UDP",
             "source": {"selector": f"app == 'app{(p + 1) % APPS}'"},
             "destination": {"ports": [53]}},
            {"action": "Pass"}],
        "egress": [
            {"action": "Allow", "protocol": "TCP",
             "destination": {"selector": f"app == 'app{(p + 3) % APPS}'", "ports": [443]}},
            {"action": "Pass"}],
    }
    res = Resource("GlobalNetworkPolicy", policy_name(p), spec=spec)
    return res.key, res.to_json().encode()


def cluster(node: str, local: int, networks: int, policies: int, remote: int = 0,
            nodes: int = 1) -> list[tuple[str, bytes]]:
    return ([profile(n) for n in range(networks)]
            + [policy(p, networks) for p in range(policies)]
            + [local_wep(node, i, networks) for i in range(local)]
            + [remote_wep(i, nodes, networks) for i in range(remote)])


def write(etcd: Etcd, records) -> None:
    for i in range(0, len(records), TXN_OPS):
        if not etcd.commit(creates=records[i:i + TXN_OPS]):
            sys.exit("bench: keys already exist in etcd")


def profile_set(n: int) -> str:
    """The address set of network n's profile rule (source has(net<n>))."""
    return set_name(parse(f"has(net{n})"), 4)


# --- measuring ---------------------------------------------------------------

class Phases:
    """Time spent in the engine's stages, by wrapping them (no edit to the
    engine): parse (the follower's parse, state.on_change), compile, membership, desired, script,
    nft.  Used as a context manager around the measured code."""

    TARGETS = [
        (Etcd, "get_prefix", "etcd reads"),
        (follower, "parse", "parse"),
        (introspect, "parse", "parse"),
        (PolicyState, "on_change", "parse"),
        (Compiler, "compile", "compile"),
        (Membership, "set_selectors", "membership"),
        (Membership, "update", "membership"),
        (Membership, "relabelled", "membership"),
        (PolicyEngine, "desired", "desired"),
        (nft, "full_script", "script"),
        (nft, "diff_script", "script"),
        (nft, "element_changes", "script"),
        (nft, "rule_changes", "script"),
        (nft, "run", "nft"),
        (nft, "inet_elements", "nft"),
        (nft, "inet_rules", "nft"),
        (PolicyEngine, "_write_status", "status"),
    ]

    def __init__(self, clock=time.perf_counter):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.clock = clock  # wall time, or CPU time (cpu_seconds)
        self._saved = []

    def __enter__(self):
        for owner, attr, phase in self.TARGETS:
            original = getattr(owner, attr)
            self._saved.append((owner, attr, original))
            setattr(owner, attr, self._wrap(original, phase))
        return self

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved = []

    def _wrap(self, fn, phase):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            started = self.clock()
            self.calls[phase] = self.calls.get(phase, 0) + 1
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + self.clock() - started
        return timed

    def line(self, total: float, divide: int = 1) -> str:
        parts = [(name, s / divide) for name, s in self.seconds.items()]
        other = total - sum(self.seconds.values()) / divide
        # a tenth of a millisecond below 10 ms: part 5's phases are that small
        return ", ".join(f"{name} {s * 1000:.{1 if abs(s) < 0.01 else 0}f}"
                         for name, s in [*parts, ("other", other)]) + " ms"


def phase_line(*syncs: dict) -> str:
    """Mean of the agent's per-sync phase records (seconds), as text."""
    names = [n for n in syncs[0] if n != "total"]
    total = statistics.mean(s["total"] for s in syncs)
    mean = {n: statistics.mean(s.get(n, 0.0) for s in syncs) for n in names}
    other = total - sum(mean.values())
    return f"{total * 1000:.0f} ms: " + ", ".join(
        f"{n} {v * 1000:.0f}" for n, v in [*mean.items(), ("other", other)]) + " ms"


def profiled(fn, top: int = 18):
    """fn() under cProfile: (its result, a report of the top entries)."""
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    out = []
    for key in ("tottime", "cumulative"):
        stream = _Lines()
        pstats.Stats(prof, stream=stream).strip_dirs().sort_stats(key).print_stats(top)
        body = stream.text().split("ncalls", 1)
        out.append(f"  -- by {key} --\n  ncalls" + body[-1].rstrip().replace("\n", "\n  "))
    return result, "\n".join(out)


class _Lines:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def text(self):
        return "".join(self.parts)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def nft_cmd(*args, netns=None) -> subprocess.CompletedProcess:
    return subprocess.run(_in_netns(["nft", *args], netns), capture_output=True, text=True)


def _in_netns(argv, netns):
    from tests.lab.common import in_netns
    return in_netns(argv, netns)


def table_counts(netns=None) -> dict[str, int]:
    """Chains, rules, sets and set elements of our table as the kernel lists it."""
    out = nft_cmd("-j", "list", "table", *TABLE.split(), netns=netns)
    if out.returncode:
        sys.exit(f"bench: nft list table failed: {out.stderr.strip()}")
    counts = {"chains": 0, "rules": 0, "sets": 0, "elements": 0}
    for item in json.loads(out.stdout)["nftables"]:
        if "chain" in item:
            counts["chains"] += 1
        elif "rule" in item:
            counts["rules"] += 1
        elif "set" in item:
            counts["sets"] += 1
            counts["elements"] += len(item["set"].get("elem", ()))
    return counts


# --- 1. programming ----------------------------------------------------------

def bench_program(args, lab, status_dir):
    from pyroute2 import netns as pyroute2_netns
    ns = lab.netns("pol-program")
    records = cluster(LOCAL, args.endpoints, args.networks, args.policies)
    print(f"1. programming {args.endpoints} local endpoints, {args.networks} networks, "
          f"{args.policies} policies (throw-away namespace, real nft)")
    status = str(status_dir / "program.json")

    def full(measure=True):
        engine = PolicyEngine(LOCAL, status)
        with Phases(cpu_seconds) if measure else contextlib.nullcontext(Phases()) as phases:
            started, cpu = time.perf_counter(), cpu_seconds()
            for key, value in records:
                feed(engine, key, value)
            engine.batch_done(True, True)
            done = time.perf_counter()
        return engine, done - started, cpu_seconds() - cpu, phases

    def change(engine, records):
        with Phases(cpu_seconds) as phases:
            started, cpu = time.perf_counter(), cpu_seconds()
            for key, value in records:
                feed(engine, key, value)
            engine.batch_done(True, False)
            return time.perf_counter() - started, cpu_seconds() - cpu, phases

    def summary(walls, cpus, phases, target):
        return (f"median {ms(statistics.median(walls))} wall, {ms(statistics.median(cpus))} "
                f"CPU (target < {target}), max {ms(max(walls))} wall, {ms(max(cpus))} CPU "
                f"({len(walls)} runs)\n"
                f"         mean CPU: {phases.line(statistics.mean(cpus), len(cpus))}")

    def add_up(total, phases):
        for name, s in phases.seconds.items():
            total.seconds[name] = total.seconds.get(name, 0.0) + s

    print(f"   ({machine_state()}; CPU: time.process_time of the process, which runs "
          f"libnftables itself; wall: perf_counter)")
    with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as inside:
        walls, cpus, total_phases = [], [], Phases()
        for _ in range(args.repeats):  # each a fresh engine rewriting the whole table
            engine, wall, cpu, phases = inside.submit(full).result()
            walls.append(wall)
            cpus.append(cpu)
            add_up(total_phases, phases)
        programmed = engine.nft.programmed
        kernel = table_counts(ns)
        expected_rules = sum(len(r) for r in programmed.chains.values()) + sum(
            len(rules) for _, rules in programmed.base.values())
        print(f"   full, from an empty engine to the table written: "
              f"{summary(walls, cpus, total_phases, '0.3 s')}\n"
              f"         table: {kernel['chains']} chains, {kernel['rules']} rules, "
              f"{kernel['sets']} sets, {kernel['elements']} set elements; "
              f"{len(programmed.chains['to-wl'])} rules in to-wl,"
              f" {sum(len(m) for _, m in programmed.maps.values())} interface map elements")
        if kernel["rules"] < expected_rules or kernel["sets"] != len(programmed.sets):
            sys.exit(f"bench: the kernel's table differs from the engine's "
                     f"({expected_rules} rules, {len(programmed.sets)} sets expected)")

        kinds = {
            "local endpoint added": (lambda k: [local_wep(LOCAL, args.endpoints + k,
                                                          args.networks)], "5 ms CPU"),
            "remote endpoint added": (lambda k: [wep("node-x", k, f"net{k % args.networks}",
                                                     address("10.200.0.0", k))], "-"),
            # the rule holding the port also holds the range 9000:9100
            "port-range rule changed": (lambda k: [policy(k % args.policies, args.networks,
                                                          port=20000 + k)], "2 ms CPU"),
        }
        for kind, (make, target) in kinds.items():
            walls, cpus, total_phases = [], [], Phases()
            for k in range(args.repeats):
                wall, cpu, phases = inside.submit(change, engine, make(k)).result()
                walls.append(wall)
                cpus.append(cpu)
                add_up(total_phases, phases)
            print(f"   one {kind}: {summary(walls, cpus, total_phases, target)}")
        last = args.endpoints + args.repeats - 1
        iface = host_ifname(endpoint_id(LOCAL, last))
        listed = nft_cmd("list", "map", *TABLE.split(), nft.TO_WL_MAP, netns=ns)
        if f'"{iface}" : goto tw-' not in listed.stdout:
            sys.exit(f"bench: the last local endpoint's {iface} is not in the kernel's "
                     f"{nft.TO_WL_MAP}")

        if args.profile:
            # A fresh engine rewrites the table: the old one's idea of it is stale.
            engine, report = inside.submit(profiled, lambda: full(measure=False)[0]).result()
            print(f"   cProfile, full programming:\n{report}")
            _, report = inside.submit(profiled, lambda: change(
                engine, [local_wep(LOCAL, args.endpoints, args.networks)])).result()
            print(f"   cProfile, one local endpoint added:\n{report}")
        inside.submit(engine.stop).result()


# --- 2. change to enforcement -------------------------------------------------

def run_agent(args):
    """An agent-like process: the agent's Follower and a PolicyEngine, no routes."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    etcd = Etcd(args.etcd)
    engine = PolicyEngine(args.node, args.status)
    # Where each sync's time goes, one JSON line per sync, for the bench.
    phases_log = open(args.status + ".phases", "a")
    batch_done = engine.batch_done

    def timed_batch_done(changed, snapshot):
        with Phases() as phases:
            started = time.perf_counter()
            batch_done(changed, snapshot)
            total = time.perf_counter() - started
        if phases.seconds:
            phases_log.write(json.dumps({"total": total, **phases.seconds}) + "\n")
            phases_log.flush()

    engine.batch_done = timed_batch_done
    thread = follower.Follower(etcd, (engine,), 30.0, stop).start("follower")
    stop.wait()
    thread.join(1.0)
    engine.stop()
    etcd.close()
    return 0


def bench_latency(args):
    """In namespace host 2, with etcd on its loopback."""
    etcd = Etcd(args.etcd)
    write(etcd, cluster(HOST2, args.endpoints, args.networks, args.policies))
    status, log = Path(args.workdir, "agent.json"), Path(args.workdir, "agent.log")
    started = time.monotonic()
    agent = subprocess.Popen([sys.executable, __file__, "--agent", "--etcd", args.etcd,
                              "--node", HOST2, "--status", str(status)],
                             stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        while not status.exists():
            if agent.poll() is not None or time.monotonic() - started > 60:
                sys.exit(f"bench: the agent did not program its table:\n{log.read_text()}")
            time.sleep(0.01)
        cold = time.monotonic() - started
        first = json.loads(status.read_text())
        print(f"2. change -> enforcement: agent-like process (Follower + PolicyEngine) in "
              f"host 2, etcd on loopback; {args.endpoints} local endpoints, "
              f"{args.policies} policies\n"
              f"   cold start: table written {cold:.2f} s after the process started "
              f"(its first sync {first['milliseconds']:.0f} ms)")

        polls = []

        def visible(argv, pattern=None):
            t = time.perf_counter()
            out = subprocess.run(["nft", *argv], capture_output=True, text=True)
            polls.append(time.perf_counter() - t)
            return out.returncode == 0 and (pattern is None or pattern.search(out.stdout))

        kinds = {
            "policy changed": lambda i: (
                policy(i % args.policies, args.networks, port=20000 + i),
                ["list", "chain", *TABLE.split(), f"pi-{policy_name(i % args.policies)}"],
                re.compile(rf"dport {20000 + i}\b")),
            "remote endpoint added": lambda i: (
                wep("node-x", i, f"net{i % args.networks}", address("10.200.0.0", i)),
                ["get", "element", *TABLE.split(), profile_set(i % args.networks),
                 f"{{ {address('10.200.0.0', i)} }}"],
                None),
            "local endpoint added": lambda i: (
                local_wep(HOST2, args.endpoints + i, args.networks),
                ["list", "map", *TABLE.split(), nft.TO_WL_MAP],
                re.compile(re.escape(f'"{host_ifname(endpoint_id(HOST2, args.endpoints + i))}"'
                                     ' : goto tw-'))),
        }
        def status_id():
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(status)
                return st.st_ino, st.st_mtime_ns  # a new inode at every write
            return None

        def wait_status(before, argv, pattern):
            """The time of the first status write after `before` whose table
            holds the change (each sync writes the status after its nft transaction)."""
            while True:
                now = status_id()
                if now != before:
                    at, before = time.perf_counter(), now
                    if visible(argv, pattern):
                        return at
                time.sleep(0.001)
                yield

        def wait_nft(argv, pattern):
            while not visible(argv, pattern):
                time.sleep(POLL)
                yield
            return time.perf_counter()

        delays = {kind: [] for kind in kinds}
        syncs = {kind: [] for kind in kinds}
        for i in range(args.changes):
            for kind, make in kinds.items():
                (key, value), argv, pattern = make(i)
                if visible(argv, pattern):
                    sys.exit(f"bench: {kind} {i} is in the table before it was written")
                before = status_id()
                written = time.perf_counter()
                etcd.put(key, value)
                waiting = wait_nft(argv, pattern) if args.poll == "nft" \
                    else wait_status(before, argv, pattern)
                try:
                    while True:
                        next(waiting)
                        if time.perf_counter() - written > 10:
                            sys.exit(f"bench: {kind} {i} not in the table after 10 s:\n"
                                     f"{log.read_text()[-3000:]}")
                except StopIteration as done:
                    delays[kind].append(done.value - written)
                syncs[kind].append(json.loads(status.read_text())["milliseconds"] / 1000)
                time.sleep(0.02)  # one change at a time
        for kind, values in delays.items():
            print(f"   {kind}: p50 {ms(statistics.median(values))}, "
                  f"p99 {ms(percentile(values, 0.99))}, max {ms(max(values))} "
                  f"({len(values)} changes; target p99 < 1 s); the agent's sync itself "
                  f"p50 {ms(statistics.median(syncs[kind]))}, max {ms(max(syncs[kind]))}")
        if args.poll == "nft":
            print(f"   (polled nft every {POLL * 1000:.0f} ms; an nft poll took "
                  f"{ms(statistics.median(polls))} median, on the agent's CPUs)")
        else:
            print(f"   (time of the agent's status write after its nft transaction, polled "
                  f"every ms, each confirmed in the table by nft; an nft call took "
                  f"{ms(statistics.median(polls))} median)")
        time.sleep(0.2)
        lines = [json.loads(line) for line in Path(f"{status}.phases").read_text().splitlines()]
        print(f"   the agent's first sync: {phase_line(lines[0])}")
        if len(lines) == 1 + args.changes * len(kinds):
            for k, kind in enumerate(kinds):
                print(f"   mean sync, {kind}: {phase_line(*lines[1 + k::len(kinds)])}")
        last = json.loads(status.read_text())
        print(f"   agent's last sync {last['milliseconds']:.0f} ms "
              f"({last['endpoints']} endpoints, {last['rules']} rules, {last['sets']} sets)")
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
        etcd.close()
    return 0


# --- 3. datapath ---------------------------------------------------------------

def echo_server(port: int) -> int:
    server = socket.create_server(("0.0.0.0", port), backlog=256)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_echo, args=(conn,), daemon=True).start()


def _echo(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _exchange(sock, message):
    sock.sendall(message)
    got = 0
    while got < len(message):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("echo server closed the connection")
        got += len(chunk)


def tcp_client(host: str, port: int, requests: int, connects: int) -> int:
    """Prints {"rr": [s, ...], "connect": [s, ...]}."""
    message = b"x" * 64
    deadline = time.monotonic() + 5
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    rr, conn = [], []
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(min(100, requests)):  # warm up
            _exchange(sock, message)
        for _ in range(requests):
            started = time.perf_counter()
            _exchange(sock, message)
            rr.append(time.perf_counter() - started)
    for _ in range(connects):
        started = time.perf_counter()
        with socket.create_connection((host, port), timeout=5) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _exchange(s, message)
        conn.append(time.perf_counter() - started)
    print(json.dumps({"rr": rr, "connect": conn}))
    return 0


WORKLOADS = {"a": "10.65.0.1", "b": "10.65.0.2"}


def bench_datapath(args, lab, status_dir):
    from pyroute2 import netns as pyroute2_netns
    host = lab.netns("pol-wl-host")
    subprocess.run(["ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                   check=True)
    workloads, records = {}, [profile(0)]
    for n, (name, ip) in enumerate(WORKLOADS.items()):
        i = 100000 + n  # not one of the cluster's endpoints
        wl = lab.workload(host, f"pol-wl-{name}", host_ifname(endpoint_id(LOCAL, i)), ip)
        workloads[name] = wl
        records.append(wep(LOCAL, i, "net0", ip, labels={"app": "app0", "role": "r0"}))
    big = cluster(LOCAL, args.endpoints, args.networks, args.policies) + records[1:]
    server = subprocess.Popen(_in_netns([sys.executable, __file__, "--echo-server",
                                         str(ECHO_PORT)], workloads["b"]))
    modes = ("off", "ct only", "on", "on+rpf", "on+cluster")
    selecting = sum(1 for p in range(args.policies) if p % APPS == 0)
    print(f"3. datapath a -> b (one network, host namespace between them; "
          f"{machine_state()}); modes: off, "
          f"ct only (a forward chain with just the conntrack rule, to tell conntrack's cost "
          f"from ours), on (profile only), on+rpf (and the anti-spoofing table), "
          f"on+cluster (+{args.endpoints} endpoints, "
          f"{args.policies} "
          f"policies, {selecting} selecting a and b); {args.rounds} rounds")

    def ping():
        out = subprocess.run(_in_netns(["busybox", "ping", "-c", str(args.pings), "-i", "0.01",
                                        "-q", WORKLOADS["b"]], workloads["a"]),
                             capture_output=True, text=True)
        found = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", out.stdout)
        if out.returncode or not found:
            sys.exit(f"bench: ping a -> b failed:\n{out.stdout}{out.stderr}")
        return float(found.group(1)) / 1000

    def tcp(requests, connects):
        out = subprocess.run(_in_netns([sys.executable, __file__, "--tcp-client",
                                        WORKLOADS["b"], str(ECHO_PORT), str(requests),
                                        str(connects)], workloads["a"]),
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            sys.exit(f"bench: tcp client failed:\n{out.stderr}")
        return json.loads(out.stdout)

    results = {mode: {"ping": [], "rr": [], "rr90": [], "connect": []} for mode in modes}
    try:
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns,
                                initargs=(host,)) as inside:
            engines = {"on": PolicyEngine(LOCAL, str(status_dir / "on.json")),
                       "on+cluster": PolicyEngine(LOCAL, str(status_dir / "big.json"))}

            def load(engine, records):
                for key, value in records:
                    feed(engine, key, value)
                engine.batch_done(True, True)

            inside.submit(load, engines["on"], records).result()
            inside.submit(load, engines["on+cluster"], big).result()

            def switch(mode):
                nft.PolicyTable().remove()
                for table in (CT_TABLE, f"{antispoofing.FAMILY} {antispoofing.TABLE}"):
                    nft.run(f"add table {table}\ndelete table {table}\n")
                if mode == "ct only":
                    nft.run(CT_ONLY)
                elif mode != "off":
                    # A full rewrite of the table.
                    engines[mode.replace("+rpf", "")].batch_done(False, True)
                if mode == "on+rpf":
                    antispoofing.ensure()

            inside.submit(switch, "off").result()
            tcp(1, 0)  # the server is up
            for mode in modes[2:]:  # filtering works both ways
                inside.submit(switch, mode).result()
                tcp(1, 0)
                ping()
            rng = random.Random(args.seed)
            for _ in range(args.rounds):
                for mode in rng.sample(modes, len(modes)):  # each round in random order
                    inside.submit(switch, mode).result()
                    time.sleep(0.3)  # the old table's deferred freeing
                    results[mode]["ping"].append(ping())
                    sample = tcp(args.requests, args.connects)
                    results[mode]["rr"].append(statistics.median(sample["rr"]))
                    results[mode]["rr90"].append(percentile(sample["rr"], 0.9))
                    results[mode]["connect"].append(statistics.median(sample["connect"]))
            inside.submit(switch, "off").result()
    finally:
        server.kill()
        server.wait()

    def us(seconds):
        return f"{seconds * 1e6:.0f} us"

    # Each figure: the median over the rounds of one run's figure; each
    # ratio: of the medians over the rounds, paired by round, with its
    # bootstrap interval (bench/stats.py).
    rng = random.Random(args.seed)
    print(f"   {machine_state()} at the end")
    for label, metric in (("ping avg", "ping"), ("TCP request/response p50", "rr"),
                          ("TCP request/response p90", "rr90"),
                          ("TCP connect+request+close p50", "connect")):
        print(f"   {label}: " + ", ".join(f"{mode} {us(statistics.median(results[mode][metric]))}"
                                          for mode in modes))
        for mode, base in (("on", "ct only"), ("on+cluster", "ct only"), ("on", "off"),
                           ("ct only", "off"), ("on+rpf", "on")):
            pairs = list(zip(results[mode][metric], results[base][metric]))
            low, high = bootstrap_interval(pairs, ratio_of_medians, rng)
            target = 1.05 if base == "ct only" else None
            print(f"      {mode} / {base}: x{ratio_of_medians(pairs):.3f} (95 % interval "
                  f"{low:.3f}-{high:.3f}" + (f"; {verdict(low, high, target)})" if target
                                             else ")"))
    print(f"   ({args.rounds} rounds, each mode once per round in random order (seed "
          f"{args.seed}): ping -c {args.pings} -i 0.01, {args.requests} request/responses on "
          f"one connection, {args.connects} connections; target on / ct only <= 1.05)")


def machine_state() -> str:
    return f"{os.cpu_count()} CPUs, load average " + " ".join(
        f"{x:.2f}" for x in os.getloadavg())


# --- 4. large cluster -----------------------------------------------------------

def sync_once(args):
    """In a fresh process: one full sync of a fresh engine, as the agent takes it."""
    mode = args.sync_once
    etcd = Etcd(args.etcd)
    engine = PolicyEngine(HOST2, args.status)
    before = vm_status()
    if mode == "tracemalloc":
        import tracemalloc
        tracemalloc.start()

    def sync():
        started = time.perf_counter()
        follower.snapshot(etcd, (engine,))
        loaded = time.perf_counter()
        engine.batch_done(True, True)
        return started, loaded, time.perf_counter()

    if mode == "profile":
        _, report = profiled(sync, top=25)
        print(report)
        return 0
    with Phases() if mode == "plain" else contextlib.nullcontext(Phases()) as phases:
        started, loaded, done = sync()
    out = {"load": loaded - started, "batch": done - loaded, "total": done - started,
           "phases": phases.seconds, "endpoints": len(engine.state.endpoints),
           "status": json.loads(Path(args.status).read_text())}
    if mode == "tracemalloc":
        out["traced_peak"] = tracemalloc.get_traced_memory()[1]
    after = vm_status()
    out["hwm_before"], out["hwm_after"] = before["VmHWM"], after["VmHWM"]
    out["rss_after"] = after["VmRSS"]
    out["table"] = table_counts()
    if mode == "plain":  # one change at this size, as in 1
        out["changes"] = {}
        for kind, (key, value) in (
                ("remote endpoint added", wep("node-x", 0, "net0", address("10.200.0.0", 0))),
                ("local endpoint added", local_wep(HOST2, args.big_local, args.big_networks)),
                ("policy changed", policy(0, args.big_networks, port=20000))):
            with Phases() as phases:
                started = time.perf_counter()
                feed(engine, key, value)
                engine.batch_done(True, False)
                out["changes"][kind] = {"total": time.perf_counter() - started,
                                        **phases.seconds}
    engine.stop()
    etcd.close()
    print(json.dumps(out))
    return 0


def vm_status() -> dict[str, int]:
    """VmHWM and VmRSS of this process, in bytes."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0]) * 1024
    return found


def bench_large(args):
    """In namespace host 2 (a fresh one), with a fresh etcd on its loopback."""
    etcd = Etcd(args.etcd)
    records = cluster(HOST2, args.big_local, args.big_networks, args.policies,
                      remote=args.remote, nodes=args.nodes)
    started = time.perf_counter()
    write(etcd, records)
    written = time.perf_counter() - started
    etcd.close()
    print(f"4. large cluster: {args.remote} endpoints of {args.nodes} other nodes, "
          f"{args.big_networks} networks, {args.policies} policies, {args.big_local} local "
          f"endpoints in etcd ({len(records)} keys written in {written:.1f} s)")
    weps = sorted((k, v) for k, v in records if k.startswith(WORKLOAD_ENDPOINTS.prefix))
    pages = [sum(len(k) + len(v) for k, v in weps[i:i + PAGE])
             for i in range(0, len(weps), PAGE)]
    print(f"   endpoint records: {sum(pages) / 2**20:.1f} MB in all, read in {len(pages)} "
          f"pages of {PAGE} keys, the largest {max(pages) / 1024:.0f} KB (gRPC's default "
          f"limit is 4 MB a message; datastore/etcd.py sets 64 MB)")
    status = Path(args.workdir, "large.json")

    def child(mode):
        out = subprocess.run([sys.executable, __file__, "--sync-once", mode, "--etcd",
                              args.etcd, "--status", str(status), "--big-local",
                              str(args.big_local), "--big-networks", str(args.big_networks)],
                             capture_output=True, text=True, timeout=600)
        if out.returncode:
            sys.exit(f"bench: the full sync failed:\n{out.stderr[-5000:]}")
        return out.stdout if mode == "profile" else json.loads(out.stdout)

    plain = child("plain")
    mb = 1024 * 1024
    s = plain["status"]
    print(f"   full sync of a fresh engine: {plain['total']:.2f} s (target < 10 s): "
          f"snapshot {plain['load']:.2f} s (etcd reads and parsing), batch_done "
          f"{plain['batch']:.2f} s\n"
          f"   {phase_line({'total': plain['total'], **plain['phases']})}\n"
          f"   peak RSS growth {(plain['hwm_after'] - plain['hwm_before']) / mb:.0f} MB "
          f"(VmHWM {plain['hwm_before'] / mb:.0f} -> {plain['hwm_after'] / mb:.0f} MB, "
          f"target < 300 MB); RSS after {plain['rss_after'] / mb:.0f} MB\n"
          f"   engine: {plain['endpoints']} endpoints, {s['endpoints']} local, "
          f"{s['rules']} rules, {s['sets']} sets; kernel table: "
          f"{plain['table']['elements']} set elements")
    for kind, record in plain["changes"].items():
        print(f"   then one {kind}: {phase_line(record)}")
    traced = child("tracemalloc")
    print(f"   tracemalloc peak {traced['traced_peak'] / mb:.0f} MB (a second fresh "
          f"process; its sync took {traced['total']:.2f} s under tracemalloc)")
    if args.profile:
        report = child("profile").rstrip().replace("\n", "\n  ")
        print(f"   cProfile, full sync:\n  {report}")
    return 0


# --- 5. one container's life -----------------------------------------------------

def cpu_seconds() -> float:
    """CPU time of this process, and of the children it has waited for: an nft
    program run for a change counts too."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def container_life(i: int, networks: int) -> list[tuple[str, tuple[str, bytes | None]]]:
    """The driver's writes of one container's endpoint, in order: (step, record)."""
    network = f"net{i % networks}"
    eid = endpoint_id("lifecycle", i)
    res = workload_endpoint(LOCAL, eid, hashlib.sha256(network.encode()).hexdigest(),
                            [f"{address('10.96.0.0', i)}/32"], DEFAULT_MAC, [network],
                            network_name=network)
    created = res.key, res.to_json().encode()
    res.annotations[SANDBOX_ANNOTATION] = f"/var/run/docker/netns/{eid[:12]}"
    joined = res.key, res.to_json().encode()
    res.annotations.update(names_annotations(network, [f"workload-{i}", eid[:12]]))
    named = res.key, res.to_json().encode()
    return [("created", created), ("sandbox annotation", joined),
            ("DNS-name annotations", named), ("deleted", (res.key, None))]


def bench_lifecycle(args, lab, status_dir):
    from pyroute2 import netns as pyroute2_netns

    from agent.names.index import NameIndex
    ns = lab.netns("pol-lifecycle")
    n = args.lifecycle_endpoints
    records = cluster(LOCAL, n, args.networks, args.policies, remote=n, nodes=10)
    print(f"5. one container's life: {n} local and {n} remote endpoints, {args.networks} "
          f"networks, {args.policies} policies in the policy engine and the name index "
          f"(throw-away namespace, real nft); {args.lifecycles} containers, each write its "
          f"own watch batch")
    engine, index = PolicyEngine(LOCAL, str(status_dir / "lifecycle.json")), NameIndex()
    views = {"policy": engine, "names": index}

    def batch(key, value):
        """One watch batch, as the follower hands it to the views:
        the CPU seconds each view took, and the policy engine's phases."""
        cpu = {}
        with Phases(cpu_seconds) as phases:
            for name, view in views.items():
                started = cpu_seconds()
                view.batch_done(feed(view, key, value), False)
                cpu[name] = cpu_seconds() - started
        return cpu, phases

    def snapshot():
        for key, value in records:
            for view in views.values():
                feed(view, key, value)
        for view in views.values():
            view.batch_done(True, True)

    steps = {}
    with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as inside:
        inside.submit(snapshot).result()
        for i in range(args.lifecycles):
            for step, (key, value) in container_life(i, args.networks):
                steps.setdefault(step, []).append(inside.submit(batch, key, value).result())
        inside.submit(engine.stop).result()
    for step, results in steps.items():
        per_view = {name: [cpu[name] for cpu, _ in results] for name in views}
        totals = [sum(cpu.values()) for cpu, _ in results]
        runs = sum(phases.calls.get("nft", 0) for _, phases in results) / len(results)
        mean = Phases()
        for _, phases in results:
            for phase, seconds in phases.seconds.items():
                mean.seconds[phase] = mean.seconds.get(phase, 0.0) + seconds
        print(f"   {step}: agent CPU median {ms(statistics.median(totals))}, "
              f"max {ms(max(totals))} ("
              + ", ".join(f"{name} {ms(statistics.median(v))}" for name, v in per_view.items())
              + f"); {runs:.1f} nft scripts a change\n"
              f"      policy engine, mean CPU: "
              f"{mean.line(statistics.mean(per_view['policy']), len(results))}")
    print("   (CPU: time.process_time plus any child's (nft) user+system time; target: "
          "no policy work for an annotation)")


# --- driving it -------------------------------------------------------------------

def inner_argv(args, part, endpoints, workdir):
    argv = [sys.executable, __file__, "--inner", part, "--etcd", endpoints,
            "--workdir", str(workdir)]
    for name in SIZES:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv + ["--poll", args.poll] + (["--profile"] if args.profile else [])


def outer(args):
    from tests.lab import EtcdServer, Lab
    from tests.lab.common import run_dir
    parts = {int(p) for p in args.parts.split(",")}
    # Under the lab's run directory, which a later run sweeps if this one is killed.
    status_dir = Path(tempfile.mkdtemp(prefix="bench-policy-", dir=run_dir()))
    try:
        with Lab() as lab:
            for part in sorted(parts):
                if part == 1:
                    bench_program(args, lab, status_dir)
                elif part == 3:
                    bench_datapath(args, lab, status_dir)
                elif part == 5:
                    bench_lifecycle(args, lab, status_dir)
                else:  # in a namespace of their own, with an etcd on its loopback
                    ns = lab.netns(f"pol-host2-{part}")
                    with EtcdServer(netns=ns) as etcd:
                        argv = inner_argv(args, {2: "latency", 4: "large"}[part],
                                          etcd.endpoints, status_dir)
                        code = subprocess.run(_in_netns(argv, ns)).returncode
                    if code:
                        return code
                    lab.delete(ns)
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small, fast run")
    p.add_argument("--seed", type=int, help="3: seed of the rounds' order and the bootstrap "
                   "(default: drawn, and printed)")
    p.add_argument("--parts", default="1,2,3,4,5", help="which parts to run (default all)")
    p.add_argument("--profile", action="store_true", help="print cProfile top entries")
    p.add_argument("--poll", choices=("status", "nft"), default="status",
                   help="2: wait for the agent's status write (confirmed by nft; default),"
                        " or poll nft every 5 ms")
    for name, (full, quick) in SIZES.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int,
                       help=f"default {full} ({quick} with --quick)")
    for hidden in ("--inner", "--etcd", "--node", "--status", "--sync-once", "--echo-server",
                   "--workdir"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--agent", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tcp-client", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    try:
        return run(args)
    except KeyboardInterrupt:  # the with-blocks have cleaned up
        print("bench: interrupted", file=sys.stderr)
        return 130


def run(args):
    if args.agent:
        return run_agent(args)
    if args.sync_once:
        return sync_once(args)
    if args.echo_server:
        return echo_server(int(args.echo_server))
    if args.tcp_client:
        host, port, requests, connects = args.tcp_client
        return tcp_client(host, int(port), int(requests), int(connects))
    if args.inner:
        return {"latency": bench_latency, "large": bench_large}[args.inner](args)
    if os.geteuid() != 0:
        sys.exit("bench/policy.py needs root (network namespaces, nft)")
    # SIGTERM unwinds like Ctrl-C, so the namespaces and etcd are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
