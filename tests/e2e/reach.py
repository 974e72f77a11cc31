"""Who reaches whom: ICMP, TCP and UDP probes between containers (and from
a host), run in parallel from the containers' own network namespaces with
tests/e2e/netprobe.py, the time a policy change takes to be enforced, and
what arrives of packets sent with a forged source address."""

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.calico_host import container_ip, docker
from tests.lab.common import LabError, LabProcess, netns_path, run_dir, wait_until

PROTOCOLS = ("icmp", "tcp", "udp")
BUSYBOX = "/bin/busybox"  # the binary the lab's busybox image is made of
_SCRIPT = Path(__file__).with_name("netprobe.py")


@dataclass(frozen=True)
class Node:
    """Where probes start from: a container, or a host's own namespace."""

    name: str
    host: object  # DockerHost
    network: str | None  # None: the host itself
    ip: str
    netns: str  # a path for nsenter --net

    def __str__(self):
        where = self.network or "host namespace"
        return f"{self.name} ({self.host.name} {where})"

    def argv(self, *argv):
        return ["nsenter", f"--net={self.netns}", *map(str, argv)]


def script():
    """netprobe.py, copied into the run's directory: the servers' command
    lines then name the run, so a sweep after a crash kills them too."""
    path = run_dir() / "netprobe.py"
    if not path.exists():
        shutil.copy(_SCRIPT, path)
    return str(path)


def host_node(host, address):
    return Node(host.name, host, None, address, netns_path(host.netns))


def container(host, name, network):
    """Container `name` on `network`, run unless it exists."""
    if host.docker("inspect", "--type", "container", name).returncode:
        docker(host, "run", "-tid", "--net", network, "--name", name, "busybox")
    pid = docker(host, "inspect", "-f", "{{.State.Pid}}", name)
    return Node(name, host, network, container_ip(host, name, network), f"/proc/{pid}/ns/net")


def serve(node, ports):
    """netprobe's TCP and UDP servers on `ports` in `node`, stopped with its host."""
    log = node.host.dir / f"netprobe-{node.name}.log"
    server = LabProcess(node.argv(sys.executable, "-I", "-S", script(), "serve", *ports), log)
    node.host.processes.append(server)
    server.start()
    if not wait_until(lambda: "ready" in log.read_text() or not server.running, 10, 0.02) \
            or not server.running:
        raise LabError(f"netprobe server in {node} did not start:\n{server.log_tail()}")
    return node


def workload(host, name, network, ports):
    """container() with serve()."""
    return serve(container(host, name, network), ports)


def probe(src, dst, proto, port=None, timeout=1):
    """True if `src` reaches `dst` (a Node or an address) with one ping, one
    TCP connection or one UDP datagram and its echo."""
    address = getattr(dst, "ip", dst)
    if proto == "icmp":
        argv = src.argv(BUSYBOX, "ping", "-c", "1", "-W", max(1, round(timeout)), address)
    else:
        argv = src.argv(sys.executable, "-I", "-S", script(), proto, address, port, timeout)
    return subprocess.run(argv, capture_output=True, timeout=timeout + 20).returncode == 0


def forge(src, source, dst, port):
    """One UDP datagram, ICMP echo request and TCP SYN from `src`'s namespace
    to `dst` (a Node or an address) with source address `source`, any."""
    subprocess.run(src.argv(sys.executable, "-I", "-S", script(), "send", source,
                            getattr(dst, "ip", dst), port),
                   check=True, capture_output=True, timeout=30)


def arrivals(node):
    """netprobe's counters of what arrived in `node`'s namespace."""
    return json.loads(subprocess.run(node.argv(sys.executable, "-I", "-S", script(), "arrivals"),
                                     check=True, capture_output=True, timeout=30).stdout)


def arrived_since(node, before, expected, timeout=10):
    """What arrived in `node` since arrivals() gave `before`, once what is
    `expected` ({counter: count}) has: the sends still in flight are then
    counted, and any one more than expected shows."""
    def delta():
        now = arrivals(node)
        return {k: now[k] - before[k] for k in expected}
    wait_until(lambda: all(n >= expected[k] for k, n in delta().items()), timeout, 0.1)
    return delta()


def mismatches(cases, port):
    """Run every (src, dst, what, expected) case at once, `what` being
    "icmp", "tcp", "udp" (to `port`) or e.g. "tcp/7002"; the descriptions
    of those whose outcome differs.  A case expected to reach gets 2 s, one
    expected to be blocked 1 s: a dropped packet is dropped at once, so a
    leak shows within that second."""
    def one(case):
        src, dst, what, expected = case
        proto, _, to = what.partition("/")
        to = int(to) if to else port
        got = probe(src, dst, proto, to, timeout=2 if expected else 1)
        if got != expected:
            what = "icmp" if proto == "icmp" else f"{proto}/{to}"
            return (f"{src} -> {dst} {what}: "
                    + ("reached, expected blocked" if got else "blocked, expected to reach"))
        return None
    with ThreadPoolExecutor(max_workers=16) as pool:
        return [m for m in pool.map(one, cases) if m]


def both_ways(pairs, expected, protocols=PROTOCOLS):
    return [(src, dst, proto, expected) for a, b in pairs for src, dst in ((a, b), (b, a))
            for proto in protocols]


def enforcement_times(change, watches, state, timeout=15, since=None):
    """Start a TCP poller per (src, dst, port) in `watches`, call change()
    (a CLI command, an etcd write) and return ({watch: seconds}, the
    seconds change() took): the seconds from change() returning (or from
    time.time() value `since`) to the first connection attempt that saw the
    port `state` ("open": answered, even by a refusal; "closed": no answer),
    None if none did within `timeout`; negative when enforced before
    change() returned."""
    deadline = time.time() + timeout
    pollers = [subprocess.Popen(src.argv(sys.executable, "-I", "-S", script(), "until", state,
                                         getattr(dst, "ip", dst), port, deadline),
                                stdout=subprocess.PIPE, text=True)
               for src, dst, port in watches]
    try:
        for poller in pollers:
            poller.stdout.readline()  # "polling": it runs before the change
        started = time.time()
        change()
        changed = time.time()
        times = []
        for poller in pollers:
            # Through the same buffered file as readline() (communicate()
            # would miss a line it buffered); it ends by its deadline.
            out = poller.stdout.read()
            poller.wait(timeout=10)
            times.append(float(out) - (since or changed) if poller.returncode == 0 else None)
    finally:
        for poller in pollers:
            if poller.poll() is None:
                poller.kill()
                poller.wait()
            poller.stdout.close()
    return ({f"{src} -> {dst} tcp/{port} {state}": t for (src, dst, port), t
             in zip(watches, times)}, changed - started)
