"""Swarm services on a Calico network and on Docker's overlay network, side
by side, in the lab of tests/e2e/swarm_lab.py (three nodes in a swarm, the
managed plugin installed from a registry on each, built first as the tests
build it).

    sudo .venv/bin/python bench/swarm.py [--replicas 30] [--scale-to 60] [--rounds 5]

Each round, for each network in an order drawn at random (--seed repeats
it): `docker service create --replicas N --endpoint-mode dnsrr` to every
task running and answering a ping from a plain container on that network
(on h1), then `docker service scale` N -> --scale-to to every new task
running and answering, then `service rm` to every task gone. dnsrr on
both: a Calico network has no VIP, and so the overlay's load balancer is
left out of its figures too. Printed: each step's seconds per network and
round, their medians, and the ratio Calico / overlay of the medians.

Not a test.
"""

import argparse
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e import reach  # noqa: E402
from tests.e2e.calico_host import docker  # noqa: E402
from tests.e2e.managed_plugin import build_plugin_dir  # noqa: E402
from tests.e2e.swarm_lab import SERVICE_LABEL, swarm_lab  # noqa: E402
from tests.lab.common import wait_until  # noqa: E402
from tests.lab.fixtures import HostFactory  # noqa: E402

NETWORKS = {"calico": "net1", "overlay": "ov1"}
STEPS = ("create", "scale", "remove")


def addresses(swarm, service, network):
    """The addresses on `network` of the service's running task containers:
    two docker commands per node."""
    found = []
    for host in swarm.hosts:
        ids = host.docker("ps", "-q", "--filter", f"label={SERVICE_LABEL}={service}").stdout.split()
        if ids:
            found += host.docker("inspect", "-f", f"{{{{(index .NetworkSettings.Networks "
                                 f"\"{network}\").IPAddress}}}}", *ids).stdout.split()
    return found


def until_reachable(swarm, prober, service, network, replicas, timeout=300):
    """Wait until `replicas` tasks run and each answers a ping from `prober`."""
    answered = set()
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(16) as pool:
        while time.monotonic() < deadline:
            found = set(addresses(swarm, service, network))
            new = sorted(found - answered)
            answered |= {a for a, ok in zip(new, pool.map(
                lambda a: reach.probe(prober, a, "icmp", timeout=1), new)) if ok}
            if len(found) == replicas and found <= answered:
                return
            time.sleep(0.1)
    raise SystemExit(f"{service}: {len(answered)} of {replicas} tasks reachable in {timeout} s")


def one_round(swarm, probers, kind, replicas, scale_to):
    network, service = NETWORKS[kind], f"bench-{kind}"
    prober = probers[kind]
    times = {}
    started = time.monotonic()
    docker(swarm.manager, "service", "create", "--detach", "--name", service, "--network",
           network, "--replicas", replicas, "--endpoint-mode", "dnsrr", swarm.image,
           "sleep", "86400")
    until_reachable(swarm, prober, service, network, replicas)
    times["create"] = time.monotonic() - started
    started = time.monotonic()
    docker(swarm.manager, "service", "scale", "--detach", f"{service}={scale_to}")
    until_reachable(swarm, prober, service, network, scale_to)
    times["scale"] = time.monotonic() - started
    started = time.monotonic()
    docker(swarm.manager, "service", "rm", service)
    if not wait_until(lambda: not addresses(swarm, service, network), 300, 0.1):
        raise SystemExit(f"{service}: tasks still run 300 s after service rm")
    times["remove"] = time.monotonic() - started
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--scale-to", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"bench/swarm.py, {time.strftime('%Y-%m-%d %H:%M:%S')}: {args.rounds} rounds, "
          f"{args.replicas} -> {args.scale_to} replicas, seed {args.seed}")
    plugin_dir = build_plugin_dir()
    factory = HostFactory()
    figures = {kind: {step: [] for step in STEPS} for kind in NETWORKS}
    try:
        with swarm_lab(factory, plugin_dir) as swarm:
            swarm.create_network(NETWORKS["calico"])
            docker(swarm.manager, "network", "create", "-d", "overlay", "--attachable",
                   NETWORKS["overlay"])
            probers = {kind: reach.container(swarm.manager, f"prober-{kind}", network)
                       for kind, network in NETWORKS.items()}
            for n in range(args.rounds):
                order = rng.sample(sorted(NETWORKS), len(NETWORKS))
                for kind in order:
                    times = one_round(swarm, probers, kind, args.replicas, args.scale_to)
                    print(f"round {n + 1} {kind:8s} " + "  ".join(
                        f"{step} {times[step]:6.2f} s" for step in STEPS), flush=True)
                    for step in STEPS:
                        figures[kind][step].append(times[step])
    finally:
        factory.close()
    print("medians:")
    for step in STEPS:
        calico, overlay = (statistics.median(figures[k][step]) for k in ("calico", "overlay"))
        print(f"  {step:7s} calico {calico:6.2f} s  overlay {overlay:6.2f} s  "
              f"calico/overlay {calico / overlay:.2f}")


if __name__ == "__main__":
    main()
