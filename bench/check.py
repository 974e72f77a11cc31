"""`calico-libnetwork check` benchmark (not a test; prints figures).

    .venv/bin/python bench/check.py [--endpoints 1000] [--rounds 5]

Needs root.  Makes a network namespace with an etcd inside it and (re-running
itself inside the namespace) one node with --endpoints containers as the
plugin leaves them: an address each in IPAM (with its handle), a
WorkloadEndpoint each, a cali veth pair each with its /32 route, a Node
record, and a fake dockerd (tests/fake_dockerd.py: a real one cannot hold a
thousand containers on this machine) showing them on one network.  Then it
programs the policy table as the node agent would, and times the whole
audit (every layer read, every comparison, the policy compiled again from
etcd; no finding expected), against a baseline measured in the same run: the bare reads of
the same etcd prefixes and one link and route dump, without any comparison.

Target: one node with 1,000 endpoints in under 2 s.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)


from agent.policy.engine import PolicyEngine  # noqa: E402
from agent.settings import AgentSettings  # noqa: E402
from datastore.etcd import Etcd  # noqa: E402
from datastore.follower import snapshot  # noqa: E402
from datastore.settings import EtcdSettings  # noqa: E402
from datastore.resources import Resource, Resources  # noqa: E402
from driver import dataplane  # noqa: E402
from driver import endpoints as ep  # noqa: E402
from driver.docker_api import DockerApi  # noqa: E402
from ipam.allocator import Ipam  # noqa: E402
from ipam.blocks import IPAM_PREFIX  # noqa: E402
from ipam.pools import build_pool, create_pool  # noqa: E402
from plugin import audit  # noqa: E402
from plugin.audit import layers as audit_layers  # noqa: E402
from plugin.audit.tools import Tools  # noqa: E402
from tests.fake_dockerd import DOCKER_26, FakeDockerd  # noqa: E402

NODE = "bench-node"
NETWORK = "ab" * 32
TXN_OPS = 100


def outer(args):
    from tests.lab import EtcdServer, Lab
    from tests.lab.common import in_netns
    with Lab() as lab:
        ns = lab.netns("bench-check")
        with EtcdServer(netns=ns) as etcd:
            argv = [sys.executable, __file__, "--inner", "--etcd", etcd.endpoints,
                    "--endpoints", str(args.endpoints), "--rounds", str(args.rounds)]
            return subprocess.run(in_netns(argv, ns)).returncode


def populate(etcd: Etcd, dockerd: FakeDockerd, count: int) -> None:
    resources = Resources(etcd)
    create_pool(resources, build_pool("bench", "10.64.0.0/16"))
    resources.create(Resource(kind="Node", name=NODE, spec={}))
    ipam = Ipam(etcd, NODE, resources)
    dockerd.networks[NETWORK] = "net1"
    weps, batch = [], []
    for n in range(count):
        endpoint_id = f"{n:011x}" + "e" * 53  # host_ifname takes the first 11
        ip = ipam.auto_assign(4, f"libnetwork.{n:032x}", {"type": "libnetwork", "node": NODE})
        wep = ep.workload_endpoint(NODE, endpoint_id, NETWORK, [f"{ip}/32"], ep.DEFAULT_MAC,
                                   ["net1"], "net1")
        wep.metadata["creationTimestamp"] = "2020-01-01T00:00:00Z"
        weps.append((wep.key, wep.to_json()))
        dockerd.endpoints.setdefault(NETWORK, {})[f"c{n:063x}"] = endpoint_id
        dockerd.addresses[endpoint_id] = f"{ip}/16"
        batch += [f"link add {ep.host_ifname(endpoint_id)} type veth peer name "
                  f"{ep.temp_ifname(endpoint_id)}",
                  f"link set {ep.host_ifname(endpoint_id)} up",
                  f"route add {ip}/32 dev {ep.host_ifname(endpoint_id)} scope link"]
    for i in range(0, len(weps), TXN_OPS):
        assert etcd.commit(creates=weps[i:i + TXN_OPS])
    resources.create(ep.network_profile("net1"))
    with tempfile.NamedTemporaryFile("w", suffix=".ip") as f:
        f.write("\n".join(batch) + "\n")
        f.flush()
        subprocess.run(["ip", "-batch", f.name], check=True)


def bare_reads(etcd: Etcd) -> None:
    """The baseline: the same ranges and dumps, nothing compared."""
    etcd.get_prefix(IPAM_PREFIX)
    for kind in ("workloadendpoints", "nodes", "profiles"):
        etcd.get_prefix(f"/calico/resources/v3/projectcalico.org/{kind}/")
    dataplane.link_names(ep.HOST_IF_PREFIX)
    dataplane.host_routes(ep.HOST_IF_PREFIX)


def program_policy(etcd: Etcd, agent: AgentSettings) -> None:
    """What the node agent does once: its policy table, sets and chains."""
    engine = PolicyEngine(NODE, agent.policy_status_path, etcd_endpoints=agent.etcd.endpoints)
    snapshot(etcd, [engine])
    engine.batch_done(True, True)


def one_check(etcd: Etcd, docker: DockerApi, agent: AgentSettings) -> int:
    resources = Resources(etcd)
    layers = audit_layers.read(NODE, resources, docker)
    found = audit.audit(layers, Tools(NODE, resources, docker, agent=agent), audit.Grace(0))
    assert not layers.unread, layers.unread
    return len(found)


def timed(fn, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def inner(args):
    etcd = Etcd([args.etcd])
    with FakeDockerd(DOCKER_26) as dockerd:
        started = time.perf_counter()
        populate(etcd, dockerd, args.endpoints)
        print(f"set up {args.endpoints} endpoints in {time.perf_counter() - started:.1f} s")
        agent = AgentSettings(NODE, EtcdSettings((args.etcd,)), run_dir=tempfile.mkdtemp())
        program_policy(etcd, agent)
        docker = DockerApi(dockerd.url, timeout=10)
        findings = one_check(etcd, docker, agent)  # warm: imports, the API version
        print(f"findings on the healthy node: {findings}")
        check = timed(lambda: one_check(etcd, docker, agent), args.rounds)
        base = timed(lambda: bare_reads(etcd), args.rounds)
    p50, base50 = statistics.median(check), statistics.median(base)
    print(f"check, {args.endpoints} endpoints: p50 {p50:.3f} s, max {max(check):.3f} s "
          f"(target < 2 s)")
    print(f"bare reads of the same layers: p50 {base50:.3f} s; check / bare reads = "
          f"{p50 / base50:.2f}")
    return 0 if max(check) < 2.0 and findings == 0 else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoints", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--etcd", help=argparse.SUPPRESS)
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/check.py needs root (a network namespace)")
    sys.exit(inner(args) if args.inner else outer(args))


if __name__ == "__main__":
    main()
