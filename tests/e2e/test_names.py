"""Names across hosts (issue 11): two Docker hosts in network namespaces,
each with dockerd, the plugin and its node agent, one etcd, and a DNS server
of the test's own standing for the hosts' nameserver.

    h1 eth1 10.0.21.1/24 ---------- h2 eth1 10.0.21.2/24
    h1 dns0 10.53.1.1/24 --+    +-- h2 dns0 10.53.2.1/24
                           upstream (10.53.1.2, 10.53.2.2; NAMESERVER on lo)

dockerd reads the machine's /etc/resolv.conf; its first nameserver (an
address outside the lab) is given to the upstream namespace and routed to
it from both hosts, so that the containers' external questions reach the
test's server and nothing leaves the lab.  dockerd 20.10 asks it from inside
the container: the agent's interception table sends those questions to its
responder.
"""

import ipaddress
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from tests.e2e.calico_host import REPO, calicoctl, docker, start_plugin
from tests.lab import EtcdServer, LabProcess
from tests.lab.common import run_dir, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

CALICO = ("--driver", "calico", "--ipam-driver", "calico-ipam")
LINK = {"h1": "10.0.21.1", "h2": "10.0.21.2"}
EXTERNAL = ("external.example", "10.99.0.7")


def machine_nameserver():
    try:
        with open("/etc/resolv.conf") as f:
            servers = [line.split()[1] for line in f if line.startswith("nameserver")]
    except OSError:
        servers = []
    for server in servers:
        address = ipaddress.ip_address(server)
        if address.version == 4 and not address.is_loopback:
            return server
    return None


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    nameserver = machine_nameserver()
    if nameserver is None:
        pytest.skip("/etc/resolv.conf has no IPv4 non-loopback nameserver for dockerd to "
                    "ask from the containers")
    lab = docker_host_factory.lab
    h1, h2 = docker_host_factory(etcd=False), docker_host_factory(etcd=False)
    lab.veth(h1.netns, "eth1", h2.netns, "eth1", f"{LINK['h1']}/24", f"{LINK['h2']}/24")
    upstream = lab.netns("upstream")
    for n, host in ((1, h1), (2, h2)):
        lab.veth(host.netns, "dns0", upstream, f"h{n}", f"10.53.{n}.1/24", f"10.53.{n}.2/24")
        lab.route(host.netns, f"{nameserver}/32", via=f"10.53.{n}.2")
    lab.addr(upstream, "lo", f"{nameserver}/32")
    subprocess.run(["ip", "-n", upstream, "link", "set", "lo", "up"], check=True)
    server = LabProcess([sys.executable, "-m", "tests.e2e.dns_upstream", nameserver, "53",
                         "=".join(EXTERNAL)], run_dir() / "dns-upstream.log",
                        {**os.environ, "PYTHONPATH": REPO}, upstream).start()
    etcd = EtcdServer(host=LINK["h1"], netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    h2.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    plugins = {}
    try:
        for host in (h1, h2):
            plugins[host.name] = start_plugin(host, IP=f"{LINK[host.name]}/24")
            for net in ("net1", "net2"):
                docker(host, "network", "create", *CALICO, net)
        yield types.SimpleNamespace(h1=h1, h2=h2, plugins=plugins, nameserver=nameserver)
    finally:
        server.stop()


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
