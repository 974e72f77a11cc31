"""Names across hosts (issue 11), in the lab of tests/e2e/names_lab.py: two
Docker hosts with the plugin and one etcd, and the test's own DNS server as
the hosts' nameserver.  dockerd 20.10 asks it from inside the container: the
agent's interception table sends those questions to its responder.
"""

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.calico_host import calicoctl, docker
from tests.e2e.names_lab import EXTERNAL, machine_nameserver, names_lab
from tests.lab.common import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    nameserver = machine_nameserver()
    if nameserver is None:
        pytest.skip("/etc/resolv.conf has no IPv4 non-loopback nameserver for dockerd to "
                    "ask from the containers")
    with names_lab(docker_host_factory, nameserver) as lab:
        yield lab


def run(host, name, net="net1", *options):
    docker(host, "run", "-tid", "--net", net, "--name", name, *options, "busybox")


def resolves(host, container, name) -> bool:
    return host.docker("exec", container, "nslookup", name, timeout=30).returncode == 0


def pings(host, container, target):
    return host.docker("exec", container, "ping", "-c", "1", "-W", "2", target).returncode == 0


def diagnose(hosts, host, container, name) -> str:
    """What a failed look-up leaves to read."""
    lookup = host.docker("exec", container, "nslookup", name)
    return "\n".join([
        f"nslookup {name}: {lookup.stdout}{lookup.stderr}",
        host.run_in_netns("nft list table ip calico-libnetwork-dns", check=False).stdout,
        calicoctl(host, "get", "workloadendpoints", "-o", "yaml", check=False).stdout,
        *(p.log_tail() for p in hosts.plugins.values())])


def test_guide_names_across_hosts(hosts):
    h1, h2 = hosts.h1, hosts.h2
    run(h1, "workload-A")
    run(h1, "workload-C")
    run(h1, "workload-B", "net2")
    started = time.monotonic()
    run(h2, "workload-E", "net1", "--network-alias", "db")
    assert wait_until(lambda: pings(h1, "workload-A", "workload-E"), 10), \
        diagnose(hosts, h1, "workload-A", "workload-E")
    print(f"workload-E pinged by name {time.monotonic() - started:.2f} s after docker run")
    assert pings(h1, "workload-A", "workload-E.net1")
    assert pings(h1, "workload-A", "db")  # its alias, across hosts
    assert pings(h1, "workload-A", "workload-C")  # same host: Docker's own answer
    assert pings(h2, "workload-E", "workload-A")
    failed = h1.docker("exec", "workload-A", "ping", "-c", "1", "-W", "1", "workload-B")
    assert failed.returncode != 0 and "bad address" in failed.stderr + failed.stdout
    assert not resolves(h1, "workload-A", "workload-E.net2")
    assert not resolves(h2, "workload-E", "workload-B")
    # The names are on the endpoint: what any host's agent reads.
    table = calicoctl(h2, "get", "workloadendpoints", "-o", "wide").stdout
    assert "workload-e" in table and "db" in table


def test_a_removed_container_stops_resolving_within_2s(hosts):
    h1, h2 = hosts.h1, hosts.h2
    run(h2, "workload-F")
    assert wait_until(lambda: resolves(h1, "workload-A", "workload-F"), 10)
    docker(h2, "rm", "-f", "workload-F")
    removed = time.monotonic()
    assert wait_until(lambda: not resolves(h1, "workload-A", "workload-F"), 5)
    assert time.monotonic() - removed < 2.0 + 0.5  # one nslookup's own time


def test_external_names_answered_by_the_hosts_nameserver(hosts):
    h1 = hosts.h1
    out = h1.docker("exec", "workload-A", "nslookup", EXTERNAL[0]).stdout
    assert EXTERNAL[1] in out, out
    missing = h1.docker("exec", "workload-A", "nslookup", "nothing.example")
    assert missing.returncode != 0
    # Over TCP too (the interception redirects both).
    assert wait_until(lambda: "calico-libnetwork-dns" in h1.run_in_netns(
        "nft list tables").stdout, 5)


def test_lookups_do_not_hang_when_the_agent_dies(hosts):
    h1 = hosts.h1
    plugin = hosts.plugins["h1"]
    agents = subprocess.run(["pgrep", "-P", str(plugin.pid), "-f", "plugin.cli agent"],
                            capture_output=True, text=True).stdout.split()
    assert agents, "no node agent under the plugin"
    os.kill(int(agents[0]), signal.SIGKILL)
    # The kernel drops the interception table with its owner.
    assert wait_until(lambda: "calico-libnetwork-dns" not in h1.run_in_netns(
        "nft list tables").stdout, 1, 0.02)
    started = time.monotonic()
    out = h1.docker("exec", "workload-A", "nslookup", EXTERNAL[0]).stdout
    assert EXTERNAL[1] in out and time.monotonic() - started < 3.0
    # The plugin restarts its agent, which serves names again.
    assert wait_until(lambda: resolves(h1, "workload-A", "workload-E"), 15), \
        diagnose(hosts, h1, "workload-A", "workload-E")
