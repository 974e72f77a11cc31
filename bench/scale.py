"""Fan-out benchmark: many simulated node agents on one etcd cluster (not a
test; prints figures).

    .venv/bin/python bench/scale.py [--agents 1000] [--per-process 10] [--client-timeout 30]
        [--nodes 1000] [--endpoints 30000] [--policies 100] [--networks 200]
        [--rate 50] [--seconds 20] [--via direct,proxy]

Starts a 3-member etcd cluster on loopback ports (data in /dev/shm) and
writes --nodes Nodes with one IPv4 block each, --networks profiles,
--policies GlobalNetworkPolicies and --endpoints WorkloadEndpoints spread
over the nodes.  Then, for each way of reaching etcd in --via:

- direct: each agent lists all three members, the first one rotating, as
  users set ETCD_ENDPOINTS;
- proxy: every agent talks to one `etcd grpc-proxy` in front of the three
  (etcd's own fan-out: it serves all the watchers of a range from one watch
  on the cluster);

it starts --agents simulated agents, --per-process of them in each worker
process.  A simulated agent is the agent's real follower
(datastore/follower.py: its snapshot, watch, record parsing and apply throttle) with its own
etcd client, feeding the agent's real routing view (ClusterState, with the
routes it would program computed and the kernel writes left out) and name
index, and a probe view that notes when each watch batch was applied.  The
policy engine is left out (its nft writes are what it does; one real agent
at this size is measured by bench/policy.py part 4).

Reported: the time until every agent has synced from scratch (all started
at once); under a steady --rate endpoint creates per second for --seconds,
write -> applied, per agent and by all agents (p50/p99); each etcd member's
(and the proxy's) CPU, RSS and database size; bytes sent to clients per
change.  Targets: write -> applied by all p99 < 1 s, etcd < 1 core per
member.

The simulated agents run on the same CPUs as etcd: on a small machine their
own CPU, not etcd's, is what limits the figures; scale down with --agents
and --endpoints, and read the load average printed beside the figures.
Their etcd clients wait --client-timeout seconds for an answer (the agent's
is 3 s): agents packed into a few processes on two CPUs get their answers
late, and a page of a snapshot that times out restarts the snapshot, which
feeds a storm that no host with an agent of its own would see.  Agents'
warnings are not printed; the number of snapshots they took is.
"""

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from netaddr import IPNetwork  # noqa: E402

from agent.names.index import NameIndex  # noqa: E402
from agent.routing.model import ClusterState  # noqa: E402
from agent.routing.routes import Local, desired_state  # noqa: E402
from bench.policy import cluster, wep, write  # noqa: E402
from bench.routes import node_resources, records  # noqa: E402
from bench.stats import percentile  # noqa: E402
from datastore.etcd import Etcd  # noqa: E402
from datastore.follower import Follower, Throttle  # noqa: E402
from datastore.records import WORKLOAD_ENDPOINTS  # noqa: E402
from ipam.pools import build_pool  # noqa: E402
from tests.lab.common import shm_dir  # noqa: E402
from tests.lab.etcd import EtcdCluster  # noqa: E402
from tests.lab.grpc_proxy import EtcdGrpcProxy  # noqa: E402

MEMBERS = 3
WRITER = "scale-writer"  # the node of the endpoints created under load
IDLE_TIMEOUT = 120.0  # no liveness keys here: a quiet watch is normal
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the etcd cluster and its proxy -------------------------------------------

def metric(url: str, name: str) -> float:
    """The sum of a Prometheus metric's samples at url/metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def process_usage(pid: int) -> dict:
    """CPU seconds, RSS bytes and bytes written (socket writes included)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss = next(int(line.split()[1]) * 1024 for line in
               Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    wchar = next(int(line.split()[1]) for line in
                 Path(f"/proc/{pid}/io").read_text().splitlines()
                 if line.startswith("wchar:"))
    return {"cpu": (int(stat[11]) + int(stat[12])) / CLK_TCK, "rss": rss, "wchar": wchar}


class Usage:
    """Each etcd member's (and the proxy's) usage over a phase."""

    def __init__(self, cluster: EtcdCluster, proxy: EtcdGrpcProxy | None):
        self.cluster, self.proxy = cluster, proxy
        self.start()

    def sample(self) -> dict:
        out = {}
        for i, member in enumerate(self.cluster.members):
            out[f"member {i}"] = {
                **process_usage(member.process.pid),
                "sent": metric(member.endpoints, "etcd_network_client_grpc_sent_bytes_total"),
                "db": metric(member.endpoints, "etcd_mvcc_db_total_size_in_bytes")}
        if self.proxy:
            usage = process_usage(self.proxy.process.pid)
            out["proxy"] = {**usage, "sent": usage["wchar"], "db": 0}
        return out

    def start(self):
        self.began, self.before = time.monotonic(), self.sample()

    def lines(self, changes: int = 0) -> list[str]:
        seconds, after = time.monotonic() - self.began, self.sample()
        lines = []
        for name, now in after.items():
            was = self.before[name]
            sent = now["sent"] - was["sent"]
            line = (f"{name}: {(now['cpu'] - was['cpu']) / seconds:.2f} cores, "
                    f"RSS {now['rss'] / 2**20:.0f} MB")
            if now["db"]:
                line += f", db {now['db'] / 2**20:.0f} MB"
            line += f", sent to clients {sent / 2**20:.1f} MB"
            if changes:
                line += f" ({sent / changes / 1024:.0f} KB per change)"
            lines.append(line)
        members = sum(now["sent"] - self.before[name]["sent"]
                      for name, now in after.items() if name != "proxy")
        if changes:
            lines.append(f"the members sent {members / changes / 1024:.1f} KB per change "
                         "in all")
        return lines


# --- the cluster's records ----------------------------------------------------

def populate(etcd: Etcd, args) -> int:
    pool = build_pool("scale", "172.16.0.0/12")
    _, blocks = records(0, args.nodes, 4, args.nodes)
    keys = ([(pool.to_resource().key, pool.to_resource().to_json())]
            + [(n.key, n.to_json()) for n in node_resources(args.nodes)] + blocks
            + cluster("none", 0, args.networks, args.policies, args.endpoints, args.nodes))
    write(etcd, keys)
    return len(keys)


# --- a worker: --per-process simulated agents ------------------------------------

class Probe:
    """The last view: when it hears of a batch, the views before it have
    applied it."""

    kinds = (WORKLOAD_ENDPOINTS,)

    def __init__(self):
        self.synced = None  # when the first snapshot was applied
        self.snapshots = 0
        self.applied: dict[str, float] = {}  # key -> when a watch batch applied it
        self._batch = []

    def reset(self) -> None:
        self._batch = []

    def on_change(self, kind, key, record) -> bool:
        self._batch.append(key)
        return True

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        now = time.time()
        if snapshot:
            self.snapshots += 1
            self.synced = self.synced or now
        else:
            for key in self._batch:
                self.applied.setdefault(key, now)
        self._batch = []


class SimAgent:
    def __init__(self, number: int, endpoints: list[str], timeout: float,
                 stop: threading.Event):
        self.name = f"sim-{number}"
        local = Local(self.name, IPNetwork(f"10.1.{number // 250}.{1 + number % 250}/16"))
        routing = ClusterState(lambda state, changed, snapshot:
                               (changed or snapshot) and desired_state(state, local))
        self.probe = Probe()
        self.etcd = Etcd(endpoints, timeout=timeout)
        self.follower = Follower(self.etcd, (routing, NameIndex(), self.probe),
                                 IDLE_TIMEOUT, stop, throttle=Throttle())


def worker(args) -> int:
    """Commands on stdin, one JSON line on stdout for each."""
    logging.basicConfig(level=logging.ERROR)
    stop = threading.Event()
    endpoints = args.etcd.split(",")
    agents = []
    for number in range(args.first, args.first + args.count):
        shift = number % len(endpoints)  # a direct agent's first member rotates
        agents.append(SimAgent(number, endpoints[shift:] + endpoints[:shift],
                               args.client_timeout, stop))
    reply({"ready": len(agents)})
    for command in sys.stdin:
        command = command.split()
        if command[0] == "go":
            for agent in agents:
                agent.follower.start(agent.name)
            while any(a.probe.synced is None for a in agents):
                time.sleep(0.05)
            reply({"synced": [a.probe.synced for a in agents]})
        elif command[0] == "report":
            reply(applied(agents, json.loads(Path(command[1]).read_text())))
        elif command[0] == "stop":
            break
    # Closing the clients under the followers' watches makes gRPC complain.
    logging.disable(logging.CRITICAL)
    threading.excepthook = lambda _: None
    stop.set()
    for agent in agents:
        agent.etcd.close()
    return 0


def applied(agents, written: dict[str, float]) -> dict:
    """Per written key, when the last of these agents applied it; each
    (agent, key)'s delay in ms, counted; how many snapshots they took."""
    last, delays, missing = {}, Counter(), 0
    for agent in agents:
        for key, at in written.items():
            seen = agent.probe.applied.get(key)
            if seen is None:
                missing += 1
                continue
            last[key] = max(last.get(key, 0.0), seen)
            delays[round((seen - at) * 1000)] += 1
    return {"last": last, "delays": delays, "missing": missing,
            "snapshots": sum(a.probe.snapshots for a in agents)}


def reply(obj) -> None:
    print(json.dumps(obj), flush=True)


# --- the run ----------------------------------------------------------------------

class Workers:
    def __init__(self, args, endpoints: list[str]):
        self.procs = []
        for first in range(0, args.agents, args.per_process):
            count = min(args.per_process, args.agents - first)
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", "--first", str(first),
                 "--count", str(count), "--etcd", ",".join(endpoints),
                 "--client-timeout", str(args.client_timeout)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)}))
        self.ask(None)  # each says it is ready

    def ask(self, command: str | None) -> list[dict]:
        """Send the command to every worker, then read each one's answer."""
        if command:
            for proc in self.procs:
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
        answers = []
        for proc in self.procs:
            line = proc.stdout.readline()
            if not line:
                sys.exit(f"bench: worker {proc.pid} died (exit {proc.wait()})")
            answers.append(json.loads(line))
        return answers

    def close(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def steady_writes(etcd: Etcd, args, via: str) -> dict[str, float]:
    """--rate endpoint creates per second for --seconds; key -> when its
    write was sent (time.time())."""
    written = {}
    interval = 1 / args.rate
    began = time.monotonic()
    for i in range(int(args.rate * args.seconds)):
        time.sleep(max(0.0, began + i * interval - time.monotonic()))
        key, value = wep(f"{WRITER}-{via}", i, "net0", f"10.250.{i // 250}.{1 + i % 250}")
        sent = time.time()
        if not etcd.commit(creates=[(key, value)]):
            sys.exit(f"bench: {key} exists")
        written[key] = sent
    return written


def run_via(args, etcd_cluster: EtcdCluster, via: str, workdir: Path) -> None:
    members = [member.endpoints for member in etcd_cluster.members]
    proxy = EtcdGrpcProxy(members).start() if via == "proxy" else None
    endpoints = [proxy.endpoints] if proxy else members
    writer = Etcd(members, timeout=args.client_timeout)
    workers = None
    try:
        workers = Workers(args, endpoints)
        usage = Usage(etcd_cluster, proxy)
        go = time.time()
        synced = [t for answer in workers.ask("go") for t in answer["synced"]]
        print(f"{via}: {args.agents} agents synced from scratch (all started at once): "
              f"all in {max(synced) - go:.1f} s, half in "
              f"{statistics.median(synced) - go:.1f} s; load average {loadavg()}")
        for line in usage.lines():
            print(f"   during the sync, {line}")

        usage.start()
        written = steady_writes(writer, args, via)
        time.sleep(args.drain)
        print(f"   {len(written)} endpoint creates at {args.rate}/s; load average {loadavg()}")
        for line in usage.lines(len(written)):
            print(f"   under load, {line}")
        path = workdir / f"written-{via}.json"
        path.write_text(json.dumps(written))
        answers = workers.ask(f"report {path}")
        report(args, written, answers)
    finally:
        if workers:
            workers.close()
        if proxy:
            proxy.close()
        for key in (written if "written" in locals() else {}):
            writer.delete(key)
        writer.close()


def report(args, written: dict[str, float], answers: list[dict]) -> None:
    delays = Counter()
    last: dict[str, float] = {}
    missing = snapshots = 0
    for answer in answers:
        delays.update({int(ms): n for ms, n in answer["delays"].items()})
        missing += answer["missing"]
        snapshots += answer["snapshots"]
        for key, at in answer["last"].items():
            last[key] = max(last.get(key, 0.0), at)
    by_all = sorted((last[key] - at) * 1000 for key, at in written.items() if key in last)
    each = sorted(delays.elements())
    if not each:
        print("   no agent applied any write")
        return
    print(f"   write -> applied, per agent: p50 {percentile(each, 50):.0f} ms, "
          f"p99 {percentile(each, 99):.0f} ms, max {each[-1]:.0f} ms")
    print(f"   write -> applied by all {args.agents} agents: p50 "
          f"{percentile(by_all, 50):.0f} ms, p99 {percentile(by_all, 99):.0f} ms, "
          f"max {by_all[-1]:.0f} ms (target p99 < 1 s); {missing} (agent, write) pairs "
          f"never applied; {snapshots} snapshots in all ({args.agents} is one each)")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def outer(args) -> int:
    print(f"bench/scale.py: {args.agents} simulated agents ({args.per_process} per process, "
          f"etcd client timeout {args.client_timeout:.0f} s), "
          f"{args.nodes} nodes, {args.endpoints} endpoints, {args.networks} networks, "
          f"{args.policies} policies; {args.rate} creates/s for {args.seconds} s; "
          f"{MEMBERS}-member etcd on loopback; {os.cpu_count()} CPUs")
    etcd_cluster = EtcdCluster(MEMBERS)
    workdir = shm_dir() / f"scale-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        etcd_cluster.start()
        etcd = Etcd(etcd_cluster.endpoints, timeout=30)
        began = time.monotonic()
        count = populate(etcd, args)
        etcd.close()
        print(f"wrote {count} keys in {time.monotonic() - began:.1f} s")
        for via in args.via.split(","):
            run_via(args, etcd_cluster, via, workdir)
    finally:
        etcd_cluster.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=1000)
    p.add_argument("--per-process", type=int, default=10)
    p.add_argument("--client-timeout", type=float, default=30.0)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=30000)
    p.add_argument("--networks", type=int, default=200)
    p.add_argument("--policies", type=int, default=100)
    p.add_argument("--rate", type=float, default=50)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--drain", type=float, default=5, help="wait after the last write (s)")
    p.add_argument("--via", default="direct,proxy")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--etcd", help=argparse.SUPPRESS)  # a worker's etcd endpoints
    args = p.parse_args()
    return worker(args) if args.worker else outer(args)


if __name__ == "__main__":
    sys.exit(main())
