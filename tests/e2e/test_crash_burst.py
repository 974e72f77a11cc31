"""The plugin killed with SIGKILL in the middle of a burst of containers
(issue 13): once restarted (its start-up sweep) and after `ipam gc --apply`,
etcd holds exactly the addresses and workload endpoints of the containers
still running, the host exactly their cali veths, and new containers start.

Containers start 4 at a time, a mix of `sleep` containers that stay and
`--rm` ones that come and go; the kill comes once a random number of them
finished, a random few milliseconds after the plugin's next request (the
seed is in the failure message), three times in one test, the checks after
each; CRASH_BURST_KILLS=12 makes it hunt longer."""

import ipaddress
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import pytest

from tests.e2e.calico_host import (WEP_PREFIX, calicoctl, container_ip, docker, in_host,
                                   keys, remove_all, start_plugin, wait_for)
from tests.lab.common import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

NET = "burst"
CONTAINERS = 24  # per burst; every third one stays
PARALLEL = 4
KILLS = int(os.environ.get("CRASH_BURST_KILLS", "3"))
BLOCK_PREFIX = "/calico/ipam/v2/assignment/"


@pytest.fixture(scope="module")
def host(docker_host):
    docker_host.plugin = start_plugin(docker_host)
    docker(docker_host, "network", "create", "--driver", "calico", "--ipam-driver",
           "calico-ipam", NET)
    yield docker_host
    remove_all(docker_host)


def start_container(host, name):
    """Start a container that stays (`keep-*`) or one that comes and goes;
    either may fail while the plugin is down."""
    if name.startswith("keep-"):
        return host.docker("run", "-d", "--net", NET, "--name", name, "busybox", "sleep", "600")
    return host.docker("run", "--rm", "--net", NET, "--name", name, "busybox", "true")


def burst_with_kill(host, burst, kill_after, delay):
    """Start the burst's containers PARALLEL at a time; once `kill_after` of
    them finished, SIGKILL the plugin's process group `delay` s after its
    next request, and start it again while the others are still starting."""
    names = [f"{'keep' if i % 3 == 0 else 'gone'}-{burst}-{i}" for i in range(CONTAINERS)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = [pool.submit(start_container, host, name) for name in names]
        for finished, _ in enumerate(as_completed(futures), 1):
            if finished == kill_after:
                kill_after_next_request(host.plugin, delay)
                host.plugin = start_plugin(host)


def kill_after_next_request(plugin, delay):
    """A container's calls follow each other within milliseconds: a kill
    just after one is logged lands in the middle of its setup or teardown
    far more often than a kill at any instant."""
    log = plugin.log_path
    size = log.stat().st_size
    wait_until(lambda: "Driver." in log.read_bytes()[size:].decode(errors="replace"), 10, 0.005)
    time.sleep(delay)
    plugin.kill()


def failed_requests(plugin):
    """The plugin's log lines of requests it failed (e.g. dockerd's retries
    of those the kill cut off)."""
    return [line for line in plugin.log_path.read_text().splitlines()
            if "calico_libnetwork.requests:" in line and " error " in line]


def running(host):
    """{endpoint id: IPv4 address} of the containers running on NET."""
    ids = docker(host, "ps", "-q", "--filter", f"network={NET}").split()
    network = f'(index .NetworkSettings.Networks "{NET}")'
    lines = docker(host, "inspect", "-f", f"{{{{{network}.EndpointID}}}} "
                   f"{{{{{network}.IPAddress}}}}", *ids).splitlines() if ids else []
    return dict(line.split() for line in lines)


def allocated(host):
    """The IPv4 addresses allocated in this etcd's IPAM blocks."""
    addresses = set()
    for key in keys(host, BLOCK_PREFIX):
        block = json.loads(host.etcd.get(key))
        first = ipaddress.ip_network(block["cidr"]).network_address
        if first.version == 4:
            addresses |= {str(first + ordinal)
                          for ordinal, used in enumerate(block["allocations"]) if used is not None}
    return addresses


def endpoints(host):
    """The endpoint ids of this host's workload endpoints."""
    return {key.rsplit("-", 1)[1] for key in keys(host, WEP_PREFIX)}


def veths(host):
    """The host ends of veths the plugin makes (cali...), and container ends
    left in the host (temp...)."""
    names = (line.split(":")[1].strip().split("@")[0]
             for line in in_host(host, ["ip", "-o", "link", "show"]).splitlines())
    return {name for name in names if name.startswith(("cali", "temp"))}


def mismatches(host):
    """What etcd and the host hold beyond (or short of) the running containers."""
    live = running(host)
    found = {"addresses": (allocated(host), set(live.values())),
             "workload endpoints": (endpoints(host), set(live)),
             "veths": (veths(host), {"cali" + endpoint[:11] for endpoint in live})}
    return {what: {"extra": sorted(have - want), "missing": sorted(want - have)}
            for what, (have, want) in found.items() if have != want}


def only_kept_containers_left(host):
    """The `--rm` containers are gone (their removal ends their teardown)."""
    names = docker(host, "ps", "-a", "--format", "{{.Names}}").split()
    return all(name.startswith("keep-") for name in names)


def test_kill_during_burst_leaves_only_running_containers_allocated(host):
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    for burst in range(KILLS):
        # At least one finished, and at least 2 x PARALLEL still to start.
        kill_after, delay = rng.randint(1, CONTAINERS - 2 * PARALLEL), rng.uniform(0, 0.02)
        context = (f"seed {seed}, burst {burst}: killed {delay * 1000:.0f} ms after a request "
                   f"once {kill_after} containers finished")
        burst_with_kill(host, burst, kill_after, delay)
        wait_for(lambda: only_kept_containers_left(host), 60, f"--rm containers to go ({context})")
        gc = json.loads(calicoctl(host, "ipam", "gc", "--apply", "--grace", "0", "-o",
                                  "json").stdout)
        # Veths of left endpoints are deleted in the background: wait for them.
        if not wait_until(lambda: not mismatches(host), 10, 0.2):
            pytest.fail(f"{context}: {mismatches(host)}; ipam gc released "
                        f"{[leak['address'] for leak in gc['leaked']]}; the restarted plugin "
                        "failed:\n" + "\n".join(failed_requests(host.plugin)))
    before = running(host)
    docker(host, "run", "-d", "--net", NET, "--name", "after", "busybox", "sleep", "600")
    address = container_ip(host, "after", NET)
    assert address and address not in before.values()
    assert not mismatches(host)
