"""BGP benchmark (not a test; prints figures).

    .venv/bin/python bench/bgp.py [--claims 30] [--peers 200] [--blocks-per-peer 50]

Needs root and bird2.  Two parts, each in throw-away namespaces:

1. Propagation.  Hosts h1 and h2 and a router (BIRD, eBGP AS 65000) on one
   segment, etcd in h1, `calico-libnetwork agent` on h1 and h2.  For each
   backend in turn (CALICO_NETWORKING_BACKEND=vxlan: routes from etcd, the
   baseline; then bird) it claims --claims new blocks for h1, one by one
   (affinity and block in one transaction, as a claim ends), and times the
   delay until h2's kernel has the route to the block, and, with bird, the
   router's kernel too.  Prints p50/p99 and the ratio of the medians.
2. Scale.  One BIRD configured by our renderer with --peers mesh peers, and
   a feeder BIRD that is those peers (one address and port each), each announcing
   --blocks-per-peer blocks.  Times the cold start (BIRD started -> every
   session Established and every route in the kernel) and reads BIRD's
   memory (VmRSS, `show memory`), against the same BIRD with no peer in the
   same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)

from netaddr import IPAddress, IPNetwork  # noqa: E402

from agent.bgp.birdconfig import BirdInputs, Family, render  # noqa: E402
from agent.bgp.control import ControlError, command  # noqa: E402
from agent.bgp.peers import MESH, Peer  # noqa: E402
from bench.stats import percentile  # noqa: E402
from datastore.bgp import BGPSettings  # noqa: E402
from datastore.etcd import Etcd  # noqa: E402
from datastore.resources import Resource  # noqa: E402
from ipam.blocks import AllocationBlock, affinity_key, affinity_value, block_key  # noqa: E402
from ipam.pools import build_pool  # noqa: E402
from tests.lab import EtcdServer, Lab, LabProcess  # noqa: E402
from tests.lab.common import in_netns, ip, wait_until  # noqa: E402

POOL = IPNetwork("10.128.0.0/12")
H1, H2, TOR = "10.0.9.1", "10.0.9.2", "10.0.9.254"
TOR_CONFIG = f"""router id {TOR};
protocol device {{ scan time 2; }}
protocol kernel {{ scan time 2; ipv4 {{ import none; export where source = RTS_BGP; }}; }}
template bgp hosts {{ local {TOR} as 65000; connect retry time 2; error wait time 1, 5;
  ipv4 {{ import all; export none; }}; }}
protocol bgp h1 from hosts {{ neighbor {H1} as 64512; }}
protocol bgp h2 from hosts {{ neighbor {H2} as 64512; }}
"""


def routed(netns, cidr) -> bool:
    return bool(ip("route", "show", "exact", str(cidr), netns=netns).stdout.strip())


def established(socket_path, count) -> bool:
    try:
        rows = command(str(socket_path), "show protocols")
    except ControlError:
        return False
    return sum("Established" in text for _, text in rows) >= count


def propagation(args, work: Path) -> dict:
    """backend -> {"h2": [seconds...], "router": [...]}"""
    found = {}
    for backend in ("vxlan", "bird"):
        with Lab() as lab:
            seg, h1, h2, tor = (lab.netns(n) for n in ("bgpb-seg", "bgpb-h1", "bgpb-h2",
                                                       "bgpb-tor"))
            ip("link", "add", "br0", "type", "bridge", netns=seg)
            ip("link", "set", "br0", "up", netns=seg)
            for n, (ns, address) in enumerate(((h1, H1), (h2, H2), (tor, TOR)), 1):
                lab.veth(ns, "eth0", seg, f"p{n}", f"{address}/24")
                ip("link", "set", f"p{n}", "master", "br0", netns=seg)
            run = work / backend
            run.mkdir()
            (run / "tor.cfg").write_text(TOR_CONFIG)
            LabProcess(["bird", "-f", "-c", str(run / "tor.cfg"), "-s", str(run / "tor.ctl")],
                       run / "tor.log", netns=tor).start()
            with EtcdServer(host=H1, netns=h1) as server:
                # The claims are written from inside h1, where etcd is reachable.
                argv = [sys.executable, __file__, "--inner", json.dumps(
                    [backend, server.endpoints, str(run), h1, h2, tor, args.claims])]
                inner = subprocess.run(in_netns(argv, h1), stdout=subprocess.PIPE, text=True,
                                       check=True)
                found[backend] = json.loads(inner.stdout)
    return found


def claims(backend, endpoints, run, h1, h2, tor, count) -> dict:
    etcd = Etcd(endpoints, timeout=5)
    try:
        return _claims(backend, etcd, endpoints, Path(run), (h1, h2, tor), count)
    finally:
        etcd.close()


def _claims(backend, etcd, endpoints, run, namespaces, count):
    h1, h2, tor = namespaces
    etcd.put(build_pool("bench", str(POOL)).to_resource().key,
             build_pool("bench", str(POOL)).to_resource().to_json())
    etcd.put("/calico/resources/v3/projectcalico.org/bgppeers/tor", Resource(
        "BGPPeer", "tor", {"peerIP": TOR, "asNumber": 65000}).to_json())
    for name, ns, address in (("h1", h1, H1), ("h2", h2, H2)):
        env = {**os.environ, "ETCD_ENDPOINTS": endpoints, "NODENAME": name,
               "IP": f"{address}/24", "CALICO_NETWORKING_BACKEND": backend,
               "CALICO_LIBNETWORK_RUN_DIR": str(run / name), "CALICO_LIBNETWORK_POLICY": "false",
               "CALICO_LIBNETWORK_DNS": "false", "PYTHONPATH": str(REPO)}
        LabProcess([sys.executable, "-m", "plugin.cli", "agent"], run / f"{name}.log", env,
                   netns=ns, cwd=str(REPO)).start()
    if backend == "bird":
        for name in ("h1", "h2"):
            assert wait_until(lambda: established(run / name / "bird" / "bird.ctl", 2), 30), \
                f"{name}'s sessions did not come up"
    else:
        assert wait_until(lambda: etcd.get("/calico/resources/v3/projectcalico.org/nodes/h2"),
                          30)
    delays = {"h2": [], "router": []}
    blocks = POOL.subnet(26)
    for claim in range(count + 1):  # the first one only warms up: both agents follow etcd
        cidr = next(blocks)
        block = AllocationBlock.new(cidr, "host:h1")
        started = time.monotonic()
        assert etcd.commit(creates=[(affinity_key("h1", cidr),
                                     json.dumps(affinity_value("confirmed"))),
                                    (block_key(cidr), block.to_json())])
        pending = {"h2": h2, "router": tor} if backend == "bird" else {"h2": h2}
        while pending and time.monotonic() - started < (30 if claim == 0 else 10):
            for where, ns in list(pending.items()):
                if routed(ns, cidr):
                    delays[where].append(time.monotonic() - started)
                    del pending[where]
            time.sleep(0.005)
        assert not pending, f"{backend}: no route to {cidr} on {', '.join(pending)}"
        if claim == 0:
            delays = {"h2": [], "router": []}
    return delays


def scale(args, work: Path) -> dict:
    """peers -> (cold start s, VmRSS kB, BIRD's own total memory line)"""
    found = {}
    for peers in (0, args.peers):
        with Lab() as lab:
            host, feeder = lab.netns("bgps-host"), lab.netns("bgps-feed")
            lab.veth(host, "eth0", feeder, "eth0", "10.200.255.1/16")
            addresses = [IPAddress(f"10.200.{i // 250}.{i % 250 + 1}") for i in range(peers)]
            for address in addresses:
                ip("addr", "add", f"{address}/16", "dev", "eth0", netns=feeder)
            run = work / f"scale-{peers}"
            run.mkdir()
            blocks = POOL.subnet(26)
            feed = ["router id 10.200.255.2;\nprotocol device { scan time 2; }\n"]
            for i, address in enumerate(addresses):
                routes = "".join(f"  route {next(blocks)} blackhole;\n"
                                 for _ in range(args.blocks_per_peer))
                feed.append(f"protocol static s{i} {{ ipv4;\n{routes}}}\n"
                            f"protocol bgp p{i} {{ local {address} port {2000 + i} as 64512; "
                            f"neighbor 10.200.255.1 port {4000 + i} as 64512; passive on;\n"
                            f"  ipv4 {{ import none; export where proto = \"s{i}\"; }}; }}\n")
            (run / "feed.cfg").write_text("".join(feed))
            inputs = BirdInputs(IPAddress("10.200.255.1"), 64512, BGPSettings(), (Family(
                4, IPNetwork("10.200.255.1/16"),
                # One feeder BIRD is every peer: BIRD 2.0 tells its sessions
                # with one neighbour apart by port, not by local address (and
                # locks each neighbour address and port: passive, the
                # feeder's remote ports are never dialled).
                tuple(Peer(MESH, a, 64512, 2000 + i, calico_node=True)
                      for i, a in enumerate(addresses)),
                plain_pools=(POOL,)),))
            (run / "bird.cfg").write_text(render(inputs))
            if peers:
                LabProcess(["bird", "-f", "-c", str(run / "feed.cfg"), "-s",
                            str(run / "feed.ctl")], run / "feed.log", netns=feeder).start()
                assert wait_until((run / "feed.ctl").exists, 10)
            started = time.monotonic()
            bird = LabProcess(["bird", "-f", "-c", str(run / "bird.cfg"), "-s",
                               str(run / "bird.ctl")], run / "bird.log", netns=host).start()
            expected = peers * args.blocks_per_peer
            assert wait_until(lambda: established(run / "bird.ctl", peers)
                              and _bird_routes(host) >= expected, 300, 0.05), \
                f"{peers} peers: not converged in 300 s"
            cold = time.monotonic() - started
            rss = _vm_rss(bird.pid)
            total = next((text.strip() for _, text in command(str(run / "bird.ctl"),
                                                              "show memory")
                          if text.strip().startswith("Total")), "?")
            found[peers] = (cold, rss, total)
    return found


def _bird_routes(netns) -> int:
    return len(ip("route", "show", "proto", "bird", netns=netns).stdout.splitlines())


def _vm_rss(pid) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _summary(values):
    return (f"p50 {statistics.median(values) * 1000:7.1f} ms  "
            f"p99 {percentile(values, 99) * 1000:7.1f} ms  (n={len(values)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=30)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--blocks-per-peer", type=int, default=50)
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(claims(*json.loads(args.inner))))
        return
    if os.geteuid() != 0:
        sys.exit("needs root (namespaces)")
    with tempfile.TemporaryDirectory(prefix="bench-bgp-") as tmp:
        found = propagation(args, Path(tmp))
        print("1. new block claimed on h1 -> route in the kernel")
        print(f"   etcd routing (vxlan), h2:   {_summary(found['vxlan']['h2'])}")
        print(f"   BGP (bird), h2:             {_summary(found['bird']['h2'])}")
        print(f"   BGP (bird), router:         {_summary(found['bird']['router'])}")
        ratio = statistics.median(found["bird"]["h2"]) / statistics.median(found["vxlan"]["h2"])
        print(f"   ratio of medians, BGP/etcd on h2: {ratio:.1f}")
        sizes = scale(args, Path(tmp))
        print(f"2. one BIRD, {args.peers} mesh peers x {args.blocks_per_peer} blocks "
              f"({args.peers * args.blocks_per_peer} prefixes)")
        for peers, (cold, rss, total) in sizes.items():
            print(f"   {peers:4d} peers: cold start {cold:6.2f} s  VmRSS {rss / 1024:6.1f} MiB  "
                  f"BIRD {total}")
        idle, full = sizes[0], sizes[args.peers]
        print(f"   ratio to the idle BIRD: memory {full[1] / idle[1]:.1f}x, "
              f"cold start {full[0] / idle[0]:.1f}x")


if __name__ == "__main__":
    main()
