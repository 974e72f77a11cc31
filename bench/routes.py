"""Node agent route programming benchmark (not a test; prints figures).

    .venv/bin/python bench/routes.py [--blocks 1000] [--nodes 1000] [--claims 100]
                                     [--family 4|6|both] [--encap direct|vxlan|both]
                                     [--endpoints 30000] [--policies 100] [--changes 400]

Needs root.  For each IP family (default: IPv4, then IPv6) and each
encapsulation (default: direct, then VXLAN) makes a network namespace with
10.0.0.1/16 and fd00::1/64 on eth0 and an etcd inside it, then (re-running
itself inside the namespace):

1. writes --blocks block affinities and blocks (/26 of an IPv4 pool, or /122
   of an IPv6 pool) for --nodes fake remote nodes with addresses on that /16
   (that /64, as bgp.ipv6Address, the agent running with IP6; with VXLAN the
   pool is vxlanMode Always and each node has its VTEP's address and MAC),
   and --endpoints WorkloadEndpoints on those nodes with --policies
   GlobalNetworkPolicies and their networks' profiles (bench/policy.py's
   cluster), starts `calico-libnetwork agent` cold (policy and names on) and
   reports the time until all their routes are in the kernel (from the
   process start, and the agent's own first full sync of its routes), until
   its policy status is written (the whole sync: the policy engine's turn
   comes after the routes'), and its RSS then;
2. with the agent running, claims --claims new blocks for remote nodes one
   by one (affinity and block written in one transaction, as a claim ends)
   and reports the delay until each route is programmed: p50 and p99;
3. (IPv4 direct only) writes --changes new remote endpoints at 100/s and
   reports the agent's CPU per change: its CPU time (/proc) over the writes
   and after them, less what it spends idle over as long just before.  Each
   window lasts at least 31 s and the idle one starts 5 s after the cold
   start, so that each holds one of the agent's 30-s resyncs (its routes'
   and policy's, about 0.1 s of CPU at this size), not both or neither.

Targets: cold start < 2 s for 1,000 nodes' blocks and a full sync of it all
< 2 s; RSS < 150 MB; < 0.1 ms of CPU per remote endpoint change; propagation
p99 < 1 s.
"""

import argparse
import json
import os
import re
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from netaddr import IPNetwork  # noqa: E402
from pyroute2 import IPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

from bench.installed import as_installed  # noqa: E402
from bench.policy import cluster, remote_wep  # noqa: E402
from datastore.etcd import Etcd  # noqa: E402
from datastore.resources import Resource  # noqa: E402
from ipam.blocks import AllocationBlock, affinity_key, affinity_value, block_key  # noqa: E402
from ipam.pools import build_pool  # noqa: E402

NODES = 1000
POOLS = {4: (IPNetwork("172.16.0.0/12"), 26), 6: (IPNetwork("fd00:b::/48"), 122)}
FAMILIES = {4: 2, 6: 10}
RTM_F_FIB_MATCH = 0x2000
TXN_OPS = 100  # etcd allows 128 operations per transaction by default
FIRST_SYNC = re.compile(r"full sync: \d+ routes \(.*?\) in (\d+) ms")
ENCAPS = {"direct": ("direct",), "vxlan": ("vxlan",), "both": ("direct", "vxlan")}


def outer(args):
    return max(outer_family(args, family, encap)
               for family in {"4": "4", "6": "6", "both": "46"}[args.family]
               for encap in ENCAPS[args.encap])


def outer_family(args, family, encap):
    from tests.lab import EtcdServer, Lab
    from tests.lab.common import in_netns
    with Lab() as lab:
        ns, peer = lab.netns("bench-host"), lab.netns("bench-peer")
        lab.veth(ns, "eth0", peer, "eth0", "10.0.0.1/16", "10.0.0.2/16")
        subprocess.run(["ip", "-n", ns, "addr", "add", "fd00::1/64", "dev", "eth0", "nodad"],
                       check=True)
        with EtcdServer(netns=ns) as etcd:
            argv = [sys.executable, __file__, "--inner", "--etcd", etcd.endpoints,
                    "--blocks", str(args.blocks), "--claims", str(args.claims),
                    "--family", family, "--nodes", str(args.nodes), "--encap", encap,
                    "--endpoints", str(args.endpoints), "--policies", str(args.policies),
                    "--changes", str(args.changes)]
            return subprocess.run(in_netns(argv, ns)).returncode


def records(start, count, version, nodes=NODES):
    """(key, value) pairs: affinity and block of blocks start..start+count,
    block i on node-<i % nodes>."""
    pool, size = POOLS[version]
    blocks = list(pool.subnet(size, count=start + count))[start:]
    pairs = []
    for i, cidr in enumerate(blocks, start):
        node = f"node-{i % nodes}"
        pairs.append((affinity_key(node, cidr), json.dumps(affinity_value("confirmed"))))
        pairs.append((block_key(cidr), AllocationBlock.new(cidr, f"host:{node}").to_json()))
    return blocks, pairs


def write(etcd, pairs):
    for i in range(0, len(pairs), TXN_OPS):
        assert etcd.commit(creates=pairs[i:i + TXN_OPS]), "keys already exist"


def our_routes(version):
    with IPRoute() as ipr:
        return sum(1 for r in ipr.route("dump", family=FAMILIES[version], table=254, proto=80)
                   if r["type"] == 1)  # unicast: not our own blocks' blackholes


def routed(ipr, cidr):
    try:
        # RTM_F_FIB_MATCH: answer with the matching route itself, not the lookup.
        found = ipr.route("get", dst=str(cidr.ip), flags=RTM_F_FIB_MATCH,
                          family=FAMILIES[cidr.version])
    except NetlinkError:  # no route at all yet (the namespace has no default)
        return False
    return bool(found) and found[0]["dst_len"] == cidr.prefixlen and found[0]["proto"] == 80


def node_resources(count, vxlan=False):
    """Nodes node-0..node-<count - 1>, addresses on 10.0.0.0/16 and
    fd00::/64, with a VTEP each (in 10.255.0.0/16 and fd00:ff::/64) if vxlan."""
    nodes = []
    for n in range(count):
        spec = {"bgp": {"ipv4Address": f"10.0.{1 + n // 200}.{1 + n % 200}/16",
                        "ipv6Address": f"fd00::{n + 2:x}/64"}}
        if vxlan:
            mac = f"66:00:00:00:{n // 256:02x}:{n % 256:02x}"
            spec.update(ipv4VXLANTunnelAddr=f"10.255.{n // 256}.{n % 256}",
                        vxlanTunnelMACAddr=mac, ipv6VXLANTunnelAddr=f"fd00:ff::{n + 1:x}",
                        vxlanTunnelMACAddrV6=mac)
        nodes.append(Resource(kind="Node", name=f"node-{n}", spec=spec))
    return nodes


def agent_usage(pid):
    """(CPU seconds, VmRSS bytes, VmHWM bytes, system CPU seconds) of the agent process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines())
    tick = os.sysconf("SC_CLK_TCK")
    return ((int(stat[11]) + int(stat[12])) / tick,
            int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024,
            int(stat[12]) / tick)


def endpoint_changes(etcd, agent, args):
    """The agent's CPU per remote endpoint created, less its idle CPU."""
    pace, settle = 0.01, 5.0
    idle_seconds = max(args.changes * pace + 1.0, 31.0)
    time.sleep(settle)
    before = agent_usage(agent.pid)
    time.sleep(idle_seconds)
    after = agent_usage(agent.pid)
    idle, idle_system = after[0] - before[0], after[3] - before[3]
    before = agent_usage(agent.pid)
    began = time.monotonic()
    for i in range(args.changes):
        time.sleep(max(0.0, began + i * pace - time.monotonic()))
        key, value = remote_wep(args.endpoints + i, args.nodes, 200)
        assert etcd.commit(creates=[(key, value)])
    time.sleep(max(0.0, began + idle_seconds - time.monotonic()))
    after = agent_usage(agent.pid)
    busy, system = after[0] - before[0], after[3] - before[3]
    print(f"{args.changes} remote endpoints created at {1 / pace:.0f}/s: agent CPU "
          f"{(busy - idle) / args.changes * 1000:.3f} ms per change, of it system "
          f"{(system - idle_system) / args.changes * 1000:.3f} ms ({busy:.2f} s in "
          f"{idle_seconds:.1f} s, {idle:.2f} s idle over as long; target < 0.1 ms); "
          f"load average {loadavg()}")


def loadavg():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def inner(args):
    version, vxlan = int(args.family), args.encap == "vxlan"
    etcd = Etcd(args.etcd)
    pool = build_pool("bench", str(POOLS[version][0]),
                      vxlan_mode="Always" if vxlan else "Never").to_resource()
    write(etcd, [(r.key, r.to_json()) for r in [pool, *node_resources(args.nodes, vxlan)]])
    _, pairs = records(0, args.blocks, version, args.nodes)
    write(etcd, pairs)
    write(etcd, cluster("bench", 0, 200, args.policies, args.endpoints, args.nodes))

    # a tmpfs, as /run (the agent's default run directory) is on a host
    run_dir = Path(tempfile.mkdtemp(prefix="bench-routes-", dir="/dev/shm"))
    log, status = run_dir / "agent.log", run_dir / "policy-bench.json"
    env = as_installed({**os.environ, "ETCD_ENDPOINTS": args.etcd, "NODENAME": "bench",
                        "IP": "10.0.0.1/16", "IP6": "fd00::1/64", "PYTHONPATH": str(REPO),
                        "CALICO_LIBNETWORK_RUN_DIR": str(run_dir)})
    started = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "plugin.cli", "agent"], env=env,
                             stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        def wait(done, what):
            while not done():
                if agent.poll() is not None or time.monotonic() - started > 120:
                    sys.exit(f"agent failed ({what}):\n{log.read_text()[-5000:]}")
                time.sleep(0.01)
            return time.monotonic() - started

        cold = wait(lambda: our_routes(version) >= args.blocks, "routes")
        synced = wait(status.exists, "policy status")
        _, rss, hwm, _ = agent_usage(agent.pid)
        first_sync = FIRST_SYNC.search(log.read_text())
        print(f"IPv{version} {args.encap}, {args.blocks} blocks of {args.nodes} remote nodes, "
              f"{args.endpoints} endpoints, {args.policies} policies: cold start, routes in "
              f"{cold:.2f} s from process start (the agent's first full sync of its routes "
              f"{first_sync.group(1) if first_sync else '?'} ms); policy status written "
              f"{synced:.2f} s (target < 2 s); RSS {rss / 2**20:.0f} MB, peak {hwm / 2**20:.0f} "
              f"MB (target < 150 MB); load average {loadavg()}")
        if version == 4 and not vxlan and args.changes:
            endpoint_changes(etcd, agent, args)

        # Past the blocks the agent may claim for its own VTEP's address.
        blocks, pairs = records(2 * args.blocks, args.claims, version, args.nodes)
        delays = []
        with IPRoute() as ipr:
            for cidr, i in zip(blocks, range(0, len(pairs), 2)):
                claimed = time.monotonic()
                assert etcd.commit(creates=pairs[i:i + 2])
                while not routed(ipr, cidr):
                    if time.monotonic() - claimed > 10:
                        sys.exit(f"no route to {cidr} after 10 s:\n{log.read_text()[-3000:]}")
                    time.sleep(0.002)
                delays.append(time.monotonic() - claimed)
        delays.sort()
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        print(f"IPv{version} {args.encap} claim -> route, {len(delays)} claims: "
              f"p50 {statistics.median(delays) * 1000:.0f} ms,"
              f" p99 {p99 * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms (target p99 < 1 s)")
    finally:
        agent.terminate()
        agent.wait(10)
        etcd.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=NODES)
    p.add_argument("--claims", type=int, default=100)
    p.add_argument("--encap", choices=tuple(ENCAPS), default="both")
    p.add_argument("--endpoints", type=int, default=30000)
    p.add_argument("--policies", type=int, default=100)
    p.add_argument("--changes", type=int, default=400)
    p.add_argument("--family", choices=("4", "6", "both"), default="both")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--etcd", help=argparse.SUPPRESS)
    args = p.parse_args()
    return inner(args) if args.inner else outer(args)


if __name__ == "__main__":
    sys.exit(main())
