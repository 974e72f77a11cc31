"""Names across hosts (issue 11), in the lab of tests/e2e/names_lab.py: two
Docker hosts with the plugin and one etcd, and the test's own DNS server as
the hosts' nameserver.  dockerd 20.10 asks it from inside the container: the
agent's interception table sends those questions to its responder.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from dnslib import QTYPE, DNSRecord

from tests.e2e import reach
from tests.e2e.calico_host import Project, calicoctl, container_ip, docker, start_plugin
from tests.e2e.names_lab import CALICO as CALICO_OPTIONS
from tests.e2e.names_lab import EXTERNAL, LINK, names_lab, nameserver_or_skip
from tests.lab.common import wait_until
from tests.lab.dockerd import COMPOSE, engine_major

pytestmark = [pytest.mark.slow, pytest.mark.require_root]


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    with names_lab(docker_host_factory, nameserver_or_skip()) as lab:
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
        host.run_in_netns("nft list table inet calico-libnetwork-dns", check=False).stdout,
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


# One service per host; Compose names the network <project>_back on both.
COMPOSE_SERVICE = """\
services:
  {service}:
    image: busybox:latest
    pull_policy: never
    command: ["sleep", "3600"]
    networks: [{network}]
networks:
  {network}:
{definition}
"""
CALICO_NETWORK = "    driver: calico\n    ipam:\n      driver: calico-ipam"


def compose_project(host, name, service, network="back", definition=CALICO_NETWORK):
    if COMPOSE is None:
        pytest.skip("no Compose v2 (bash scripts/docker-versions.sh 26 fetches Debian 13's)")
    project = Project(host, name, COMPOSE_SERVICE.format(
        service=service, network=network, definition=definition))
    project.compose("up", "--detach", "--quiet-pull")
    return project


def test_compose_service_names_across_hosts(hosts):
    h1, h2 = hosts.h1, hosts.h2
    projects = []
    try:
        # The same project on both hosts: both networks are named shop_back.
        projects.append(compose_project(h2, "shop", "stock"))
        projects.append(app := compose_project(h1, "shop", "app"))
        exec_ping = ("exec", "-T", "app", "ping", "-c", "1", "-W", "2")
        assert wait_until(lambda: app.compose(*exec_ping, "stock", check=False).returncode
                          == 0, 10), diagnose(hosts, h1, app.container("app"), "stock")
        assert app.compose(*exec_ping, "shop-stock-1", check=False).returncode == 0
        assert app.compose(*exec_ping, "stock.shop_back", check=False).returncode == 0
        # A service on an external network (net1, made with `docker network
        # create` on each host) is a name of net1's containers on every host.
        projects.append(compose_project(h2, "cache", "redis", "net1", "    external: true"))
        assert wait_until(lambda: pings(h1, "workload-A", "redis"), 10), \
            diagnose(hosts, h1, "workload-A", "redis")
        # Other networks' containers do not see them.
        assert not resolves(h1, "workload-A", "stock")
        assert app.compose("exec", "-T", "app", "nslookup", "redis",
                           check=False).returncode != 0
    finally:
        for project in reversed(projects):
            project.compose("down", "--timeout", "1", check=False)


def test_aaaa_across_hosts(hosts):
    h1, h2 = hosts.h1, hosts.h2
    for host in (h1, h2):
        docker(host, "network", "create", *CALICO_OPTIONS, "--ipv6", "net6")
    run(h1, "v6-a", "net6")
    run(h2, "v6-e", "net6")
    v6 = container_ip(h2, "v6-e", "net6", "GlobalIPv6Address")
    v4 = container_ip(h2, "v6-e", "net6")

    def lookup(qtype):
        return h1.docker("exec", "v6-a", "nslookup", f"-type={qtype}", "v6-e").stdout

    assert wait_until(lambda: v6 in lookup("AAAA"), 10), \
        diagnose(hosts, h1, "v6-a", "v6-e")
    assert v4 in lookup("A") and v6 not in lookup("A")
    assert not resolves(h1, "workload-A", "v6-e")  # net1 does not see net6's names


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


def test_names_over_tcp(hosts):
    """The interception redirects TCP too: a question to the host's
    nameserver over TCP gets the agent's answer for another host's container,
    and a forwarded answer for an external name."""
    h1, h2 = hosts.h1, hosts.h2
    address_e = container_ip(h2, "workload-E", "net1")
    assert tcp_lookup(h1, "workload-A", hosts.nameserver, "workload-E") == [address_e], \
        diagnose(hosts, h1, "workload-A", "workload-E")
    assert tcp_lookup(h1, "workload-A", hosts.nameserver, EXTERNAL[0]) == [EXTERNAL[1]]


def tcp_lookup(host, container, server, name) -> list[str]:
    """The A records of `name`, asked of `server` over TCP from `container`
    (busybox's nslookup asks over UDP only): the length-prefixed question
    through nc, the reply read back as hex."""
    question = DNSRecord.question(name)
    question.header.id = 1  # every byte of the question is then ASCII (text stdin)
    packed = question.pack()
    wire = (len(packed).to_bytes(2, "big") + packed).decode("ascii")
    result = host.docker("exec", "-i", container, "sh", "-c",
                         f"nc -w 2 {server} 53 | od -An -v -tx1", input=wire, timeout=30)
    data = bytes.fromhex("".join(result.stdout.split()))
    assert len(data) > 2, f"no answer over TCP from {server}: {result.stderr}"
    reply = DNSRecord.parse(data[2:2 + int.from_bytes(data[:2], "big")])
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def names_report(host) -> dict:
    return json.loads(calicoctl(host, "status", "-o", "json", check=False).stdout)["names"]


def test_status_says_what_to_set_on_dockerd_28_and_later(hosts):
    h1 = hosts.h1
    config = h1.dir / "daemon.json"  # what this dockerd reads (--config-file)
    report = names_report(h1)
    assert report["daemonJson"] == str(config)
    assert report["daemonDns"] == hosts.daemon_config.get("dns", [])
    assert report["advice"] is None  # names work here, as the other tests show
    saved = config.read_text()
    config.write_text(json.dumps({"dns": [hosts.nameserver]}))  # as before the quick start
    try:
        advice = names_report(h1)["advice"]
    finally:
        config.write_text(saved)
    if engine_major() >= 28:
        assert '"dns": ["169.254.1.1"' in advice and str(config) in advice
    else:
        assert advice is None  # asked from the container: nothing to set


def agent_pid(hosts, name="h1") -> int:
    agents = subprocess.run(["pgrep", "-P", str(hosts.plugins[name].pid), "-f",
                             "plugin.cli agent"], capture_output=True, text=True).stdout.split()
    assert agents, "no node agent under the plugin"
    return int(agents[0])


def test_a_frozen_agent_leaves_lookups_to_the_nameserver(hosts):
    """A stuck agent (SIGSTOP) costs no lookup dockerd's 4 s: its watchdog
    takes the interception away, so that Docker's embedded DNS, asked as a
    resolver asks with a 1 s timeout, gets the nameserver's answer; SIGCONT
    brings the names of other hosts' containers back."""
    h1 = hosts.h1
    workload_a = reach.container(h1, "workload-A", "net1")

    def resolve(name, attempts=2):
        """As a resolver asks: `attempts` questions of 1 s each (2: glibc's
        default count; dockerd would wait 4 s for a frozen responder)."""
        result = subprocess.run(workload_a.argv(sys.executable, "-I", "-S", reach.script(),
                                                "resolve", "127.0.0.11", name, 1, attempts),
                                capture_output=True, text=True, timeout=30)
        return result.stdout.split() if result.returncode == 0 else None

    assert wait_until(lambda: resolves(h1, "workload-A", "workload-E"), 10)
    agent = agent_pid(hosts)
    os.kill(agent, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        # Asked at the freeze: the first 1 s attempt may be lost to the
        # frozen responder, the second is the nameserver's.
        assert EXTERNAL[1] in (resolve(EXTERNAL[0]) or []), diagnose(
            hosts, h1, "workload-A", EXTERNAL[0])
        print(f"answered by the nameserver {time.monotonic() - frozen:.2f} s after SIGSTOP")
        address_c = container_ip(h1, "workload-C", "net1")
        assert resolve("workload-C") == ["rcode", "0", address_c]  # Docker's own answer
        assert resolve("workload-E") == ["rcode", "3"]  # the nameserver's NXDOMAIN
        report = names_report(h1)
        assert report["responder"]["answering"] is False and report["intercepted"] == []
        assert "NOT ANSWERING" in calicoctl(h1, "status", check=False).stdout
    finally:
        os.kill(agent, signal.SIGCONT)
    assert wait_until(lambda: resolves(h1, "workload-A", "workload-E"), 5), \
        diagnose(hosts, h1, "workload-A", "workload-E")
    assert names_report(h1)["responder"]["answering"] is True


def test_lookups_do_not_hang_when_the_agent_dies(hosts):
    h1 = hosts.h1
    os.kill(agent_pid(hosts), signal.SIGKILL)
    # The kernel drops the interception table with its owner.
    assert wait_until(lambda: "calico-libnetwork-dns" not in h1.run_in_netns(
        "nft list tables").stdout, 1, 0.02)
    started = time.monotonic()
    out = h1.docker("exec", "workload-A", "nslookup", EXTERNAL[0]).stdout
    assert EXTERNAL[1] in out and time.monotonic() - started < 3.0
    # The plugin restarts its agent, which serves names again.
    assert wait_until(lambda: resolves(h1, "workload-A", "workload-E"), 15), \
        diagnose(hosts, h1, "workload-A", "workload-E")


def test_dns_off_on_a_running_host_leaves_names_to_docker(hosts):
    """Last in this module: h1's plugin restarted with
    CALICO_LIBNETWORK_DNS=false (the module's teardown stops it). Its agent
    runs but takes no question: another host's container, which resolved
    before, no longer does, while Docker's own names and external ones do."""
    h1 = hosts.h1
    assert resolves(h1, "workload-A", "workload-E")
    hosts.plugins["h1"].stop()
    h1.plugin = hosts.plugins["h1"] = start_plugin(h1, IP=f"{LINK['h1']}/24",
                                                   CALICO_LIBNETWORK_DNS="false")
    # Its agent started its name service, if any, before its first sync.
    assert wait_until(lambda: "full sync" in h1.plugin.log_tail(), 20), h1.plugin.log_tail()
    assert "calico-libnetwork-dns" not in h1.run_in_netns("nft list tables").stdout
    assert not resolves(h1, "workload-A", "workload-E")
    assert resolves(h1, "workload-A", "workload-C")  # same host: Docker's answer
    out = h1.docker("exec", "workload-A", "nslookup", EXTERNAL[0]).stdout
    assert EXTERNAL[1] in out, out
