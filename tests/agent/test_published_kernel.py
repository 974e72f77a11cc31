"""Published ports against the real kernel: the host namespace, workloads
and neighbours of tests/agent/test_policy_kernel.py, the published-ports
view and the policy engine fed the records etcd would hold, and real
connections from a neighbour, the host itself (127.0.0.1 too), a workload
of another network and the publishing workload itself (hairpin)."""

import json
import subprocess
import sys

import pytest

from agent.policy.engine import PolicyEngine
from agent.published import TABLE, PublishedPorts
from datastore.annotations import PUBLISHED_PORTS
from datastore.ports import PortBinding, dumps
# host and lan are test_policy_kernel's fixtures, which the tests below take.
from tests.agent.test_policy_kernel import (NODE, engine_run, host, host_endpoint,  # noqa: F401
                                            lan, open_profile, policy, profile, wep)
from tests.lab.common import wait_until

pytestmark = pytest.mark.require_root

HOST_ADDRESS = "10.0.7.1"  # the host's eth1; n1 is 10.0.7.2
BINDINGS = dumps([PortBinding("tcp", 8080, 80), PortBinding("tcp", 8081, 80, "127.0.0.1")])
LISTEN = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 80))
s.listen()
print("ready", flush=True)
s.settimeout(2.5)
try:
    print(s.accept()[1][0], flush=True)
except OSError:
    print("none", flush=True)
"""


def published_a(**annotations):
    return wep("a", annotations={PUBLISHED_PORTS: BINDINGS, **annotations})


def seen(listener_ns, client_ns, address, port):
    """The source address a listener on port 80 in listener_ns sees for a
    connection from client_ns to address:port; None when none arrives."""
    listener = subprocess.Popen(["ip", "netns", "exec", listener_ns, sys.executable, "-c",
                                 LISTEN], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", client_ns, "busybox", "sh", "-c",
                        f"echo hi | busybox nc -w 1 {address} {port}"],
                       capture_output=True, timeout=10)
        peer = listener.stdout.readline().strip()
        return None if peer == "none" else peer
    finally:
        listener.kill()
        listener.wait()


@pytest.fixture
def views(host):  # noqa: F811
    inside, workloads, status, host_ns = host
    # The driver sets route_localnet on a publishing endpoint's cali at Join.
    cali_a = wep("a")[0].rsplit("-", 1)[1][:11]
    subprocess.run(["ip", "netns", "exec", host_ns, "sysctl", "-qw",
                    f"net.ipv4.conf.cali{cali_a}.route_localnet=1"], check=True)
    return inside, workloads, host_ns, PublishedPorts(NODE), PolicyEngine(NODE, status)


def run(inside, views, *records):
    for view in views:
        engine_run(inside, view, *records)


def test_a_published_port_answers_everyone_with_the_clients_address(views, lan):  # noqa: F811
    inside, workloads, host_ns, ports, engine = views
    n1 = lan["n1"]
    run(inside, (ports, engine), profile("net1"), profile("net2"), published_a(), wep("b"),
        wep("c"))
    assert seen(workloads["a"], n1, HOST_ADDRESS, 8080) == "10.0.7.2"  # the client's own
    assert seen(workloads["a"], host_ns, HOST_ADDRESS, 8080) == HOST_ADDRESS
    local = seen(workloads["a"], host_ns, "127.0.0.1", 8080)  # masqueraded
    assert local is not None and not local.startswith("127.")
    assert seen(workloads["a"], workloads["b"], HOST_ADDRESS, 8080) == "10.65.0.2"  # net2
    assert seen(workloads["a"], workloads["b"], "10.65.0.1", 80) is None  # not published
    assert seen(workloads["a"], workloads["a"], HOST_ADDRESS, 8080) is not None  # hairpin
    # 127.0.0.1:8081: the host's own connections only.
    assert seen(workloads["a"], host_ns, "127.0.0.1", 8081) is not None
    assert seen(workloads["a"], n1, HOST_ADDRESS, 8081) is None
    # The endpoint goes: so does its binding.
    run(inside, (ports, engine), (published_a()[0], None))
    assert seen(workloads["a"], n1, HOST_ADDRESS, 8080) is None
    assert "dnat" not in inside.submit(subprocess.run, ["nft", "list", "table", *TABLE.split()],
                                       capture_output=True, text=True).result().stdout


def test_policy_restricts_a_published_port(views, lan):  # noqa: F811
    """A GlobalNetworkPolicy selecting the endpoint decides (only n2's net
    here), and so does a preDNAT policy of the host's "*" endpoint."""
    inside, workloads, host_ns, ports, engine = views
    n1, n2 = lan["n1"], lan["n2"]
    run(inside, (ports, engine), profile("net1"), published_a())
    run(inside, (engine,), policy("from-n2", {
        "order": 10, "selector": "has(net1)", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "source": {"nets": ["10.0.8.0/24"]}}]}))
    assert seen(workloads["a"], n1, HOST_ADDRESS, 8080) is None
    assert seen(workloads["a"], n2, "10.0.8.1", 8080) == "10.0.8.2"
    run(inside, (engine,), (policy("from-n2", {})[0], None), open_profile("open"),
        host_endpoint("h1-all", "*", labels={"role": "docker-host"}, profiles=["open"]),
        policy("pre-deny", {"applyOnForward": True, "preDNAT": True,
                            "selector": "role == 'docker-host'", "types": ["Ingress"],
                            "ingress": [{"action": "Deny", "protocol": "TCP",
                                         "source": {"nets": ["10.0.7.0/24"]},
                                         "destination": {"ports": [8080]}}]}))
    assert seen(workloads["a"], n1, HOST_ADDRESS, 8080) is None
    assert seen(workloads["a"], n2, "10.0.8.1", 8080) == "10.0.8.2"


def test_a_new_view_writes_the_whole_table_again(views, lan):  # noqa: F811
    """(lan: the host needs an address of its own to masquerade 127.0.0.1 to.)"""
    inside, workloads, host_ns, ports, _ = views
    run(inside, (ports,), published_a(), wep("b"))
    assert ports.programmed
    # A new agent (a restart) replays the whole table from its snapshot.
    again = PublishedPorts(NODE)
    run(inside, (again,), published_a())
    listing = inside.submit(subprocess.run, ["nft", "list", "table", *TABLE.split()],
                            capture_output=True, text=True).result().stdout
    assert listing.count("dnat ip to 10.65.0.1:80") == 2
    assert wait_until(lambda: seen(workloads["a"], host_ns, "127.0.0.1", 8080), 3, 0.1)


def test_bindings_of_each_family_and_address(views):
    """Every address: a rule per family the endpoint has; 0.0.0.0 and :: one
    family's; a host address only its own family's and only that address."""
    inside, _, _, ports, _ = views
    key, value = wep("dual", address="10.65.0.9")
    record = json.loads(value)
    record["spec"]["ipNetworks"].append("fd00:65::9/128")
    record["metadata"]["annotations"][PUBLISHED_PORTS] = dumps([
        PortBinding("tcp", 9000, 80), PortBinding("udp", 9001, 53, "0.0.0.0"),
        PortBinding("sctp", 9002, 80, "::"), PortBinding("tcp", 9003, 80, "10.0.7.1"),
        PortBinding("tcp", 9004, 80, "fd00:7::1")])
    run(inside, (ports,), (key, json.dumps(record).encode()))
    assert ports.programmed
    rules = [line.strip() for line in inside.submit(
        subprocess.run, ["nft", "list", "chain", *TABLE.split(), "published"],
        capture_output=True, text=True).result().stdout.splitlines() if "dnat" in line]
    assert {(r.split("dport ")[1].split()[0], r.split(" to ")[1]) for r in rules} == {
        ("9000", "10.65.0.9:80"), ("9001", "10.65.0.9:53"), ("9003", "10.65.0.9:80"),
        ("9000", "[fd00:65::9]:80"), ("9002", "[fd00:65::9]:80"),
        ("9004", "[fd00:65::9]:80")}
    assert len(rules) == 6
    assert any("ip daddr 10.0.7.1 " in r and "dport 9003" in r for r in rules)
    assert any("ip6 daddr fd00:7::1 " in r and "dport 9004" in r for r in rules)


def test_a_flushed_table_is_written_again(views):
    inside, _, _, ports, _ = views
    run(inside, (ports,), published_a())
    inside.submit(ports.check).result()
    assert ports.programmed  # there: nothing to do
    inside.submit(subprocess.run, ["nft", "flush", "ruleset"], check=True).result()
    inside.submit(ports.check).result()
    assert not ports.programmed
    inside.submit(ports.batch_done, False, False).result()  # a quiet batch
    listing = inside.submit(subprocess.run, ["nft", "list", "table", *TABLE.split()],
                            capture_output=True, text=True).result().stdout
    assert "dnat ip to 10.65.0.1:80" in listing
