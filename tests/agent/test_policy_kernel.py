"""The policy engine against the real kernel: a "host" namespace with three
workloads on cali veths (A and C in net1, B in net2), the engine run in a
thread that joined the host, real packets between the workloads.  No dockerd
and no etcd: the engine is fed the records etcd would hold."""

import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.policy import nft
from agent.policy.compiler import Compiler
from agent.policy.engine import PolicyEngine, remove_policy
from datastore.felix_configuration import FelixSettings, ProtoPort
from datastore.resources import Resource
from driver.endpoints import (SANDBOX_ANNOTATION, names_annotations, network_profile,
                              workload_endpoint)
from tests.lab import Lab
from tests.lab.common import wait_until
from pyroute2 import netns as pyroute2_netns
from tests.introspect import feed
from tests.agent.policy_records import calico_node, ip_pool

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

NODE = "h1"
WORKLOADS = {"a": ("net1", "10.65.0.1"), "b": ("net2", "10.65.0.2"),
             "c": ("net1", "10.65.0.3")}


def endpoint_id(name):
    return hashlib.sha256(name.encode()).hexdigest()


def wep(name, node=NODE, labels=None, address=None, annotations=None):
    network, ip = WORKLOADS.get(name, ("net1", address))
    res = workload_endpoint(node, endpoint_id(name), "n" * 64, [f"{address or ip}/32"],
                            "ee:ee:ee:ee:ee:ee", [network])
    res.labels.update(labels or {})
    res.annotations.update(annotations or {})
    return res.key, res.to_json().encode()


def profile(name):
    res = network_profile(name)
    return res.key, res.to_json().encode()


def policy(name, spec):
    res = Resource("GlobalNetworkPolicy", "default." + name, spec=spec)
    return res.key, res.to_json().encode()


@pytest.fixture
def host(tmp_path):
    with Lab() as lab:
        ns = lab.netns("policy-host")
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True)
        workloads = {}
        for name, (_, address) in WORKLOADS.items():
            wl = lab.workload(ns, f"policy-{name}", "cali" + endpoint_id(name)[:11], address)
            workloads[name] = wl
        # One thread that joined the host namespace: the libnftables context
        # the engine makes in it acts there.
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as inside:
            yield inside, workloads, str(tmp_path / "status.json"), ns


def engine_run(inside, engine, *records):
    """Apply records (key, value-or-None) as one watch batch in the host."""
    def batch():
        for key, value in records:
            feed(engine, key, value)
        engine.batch_done(True, False)
        return engine
    return inside.submit(batch).result()


def pings(workloads, src, dst):
    return subprocess.run(
        ["ip", "netns", "exec", workloads[src], "busybox", "ping", "-c1", "-W1",
         WORKLOADS[dst][1]], capture_output=True).returncode == 0


def tcp_open(workloads, src, dst, port):
    """A TCP connect from src to a listener on dst:port."""
    return tcp_reaches(workloads[src], workloads[dst], WORKLOADS[dst][1], port)


def tcp_reaches(src_ns, listener_ns, address, port):
    """A TCP connect from namespace src_ns to address:port, where a listener
    in listener_ns waits on every address."""
    server = subprocess.Popen(["ip", "netns", "exec", listener_ns, "busybox", "nc", "-l",
                               "-p", str(port)], stdout=subprocess.DEVNULL)

    def listening():
        return f":{port} " in subprocess.run(
            ["ip", "netns", "exec", listener_ns, "ss", "-Hltn"], capture_output=True,
            text=True).stdout

    try:
        assert wait_until(listening, 5, 0.02), "the listener did not start"
        return subprocess.run(
            ["ip", "netns", "exec", src_ns, "busybox", "sh", "-c",
             f"echo hi | busybox nc -w 1 {address} {port}"],
            capture_output=True, timeout=10).returncode == 0
    finally:
        server.kill()
        server.wait()


def test_networks_are_isolated_and_changes_apply_incrementally(host):
    ns, workloads, status, _ = host
    assert pings(workloads, "a", "b")  # flat before the engine runs
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"))
    assert pings(workloads, "a", "c") and pings(workloads, "c", "a")
    assert not pings(workloads, "a", "b") and not pings(workloads, "b", "a")
    assert not tcp_open(workloads, "b", "a", 7000)
    # A policy: net2's workloads may reach net1's on TCP 7000 only.
    engine = engine_run(ns, engine, policy("open7000", {
        "order": 10, "selector": "has(net1)", "types": ["Ingress"],
        "ingress": [{"action": "Allow", "protocol": "TCP", "source": {"selector": "has(net2)"},
                     "destination": {"ports": [7000]}},
                    {"action": "Pass"}]}))
    assert tcp_open(workloads, "b", "a", 7000)
    assert not tcp_open(workloads, "b", "a", 7001)
    assert not pings(workloads, "b", "a")
    assert pings(workloads, "c", "a")  # Pass: the profile still admits net1
    # Removing the policy closes the port again.
    engine = engine_run(ns, engine, (policy("open7000", {})[0], None))
    assert not tcp_open(workloads, "b", "a", 7000)


def test_a_remote_endpoint_joins_a_set_without_rule_changes(host):
    ns, workloads, status, _ = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"))
    chains = dict(engine.nft.programmed.chains)
    engine = engine_run(ns, engine, wep("remote", node="h2", address="10.65.9.9"))
    assert engine.nft.programmed.chains == chains
    members = {m for _, ms in engine.nft.programmed.sets.values() for m in ms}
    assert "10.65.9.9" in members
    engine = engine_run(ns, engine, (wep("remote", node="h2", address="10.65.9.9")[0], None))
    assert "10.65.9.9" not in {m for _, ms in engine.nft.programmed.sets.values() for m in ms}


def counted(monkeypatch, owner, name):
    """Calls to owner.name (a module's function, a class's method) from now
    on, which still does its work."""
    calls, real = [], getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *args: calls.append(args) or real(*args))
    return calls


def kernel_sets(inside, engine):
    """The kernel's sets (name -> members) and the engine's idea of them."""
    return (inside.submit(engine.nft.sets).result(),
            {name: members for name, (_, members) in engine.nft.programmed.sets.items()})


def test_set_members_alone_change_through_nfnetlink_without_a_script(host, monkeypatch):
    """A remote endpoint coming or going changes members of address sets
    alone: one nfnetlink transaction, no libnftables script (whose table
    listing costs ten times as much).  When the kernel refuses it (a
    member gone behind our back), the next sync rewrites the table; many
    members at once still go as a script."""
    ns, workloads, status, netns = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"))
    scripts = counted(monkeypatch, nft, "run")
    v4, v6 = wep("r4", node="h2", address="10.65.9.9"), wep("r6", node="h2", address="fd00::9")
    engine_run(ns, engine, v4, v6)
    engine_run(ns, engine, (v4[0], None))
    assert scripts == []
    found, programmed = kernel_sets(ns, engine)
    assert found == programmed
    members = set().union(*found.values())
    assert "fd00::9" in members and "10.65.9.9" not in members
    # fd00::9 leaves the kernel's set behind our back: deleting it is refused.
    name = next(n for n, m in found.items() if "fd00::9" in m)
    subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "element", nft.FAMILY,
                    nft.TABLE, name, "{ fd00::9 }"], check=True)
    engine_run(ns, engine, (v6[0], None))
    assert engine.nft.programmed is None  # not what the kernel holds
    engine_run(ns, engine, wep("r5", node="h2", address="10.65.9.5"))
    found, programmed = kernel_sets(ns, engine)
    assert found == programmed and "10.65.9.5" in set().union(*found.values())
    scripts.clear()
    many = [wep(f"r{i}", node="h2", address=f"10.66.{i // 250}.{i % 250 + 1}")
            for i in range(2100)]
    engine_run(ns, engine, *many)
    assert len(scripts) == 1
    found, programmed = kernel_sets(ns, engine)
    assert found == programmed and "10.66.8.100" in set().union(*found.values())
    assert pings(workloads, "a", "c") and not pings(workloads, "a", "b")


_MAP_ELEMENT = re.compile(r'"([^"]+)" : goto ([\w-]+)')


def kernel_maps(netns):
    """The kernel's interface maps, as nft lists them: name -> {interface: chain}."""
    return {name: dict(_MAP_ELEMENT.findall(subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "map", nft.FAMILY, nft.TABLE, name],
        capture_output=True, text=True, check=True).stdout))
        for name in (nft.FROM_WL_MAP, nft.TO_WL_MAP)}


def programmed_maps(engine):
    return {name: dict(_MAP_ELEMENT.findall(" ".join(elements)))
            for name, (_, elements) in engine.nft.programmed.maps.items()}


def test_local_endpoints_of_existing_chains_change_map_elements_through_nfnetlink(
        host, monkeypatch):
    """A local endpoint whose policies and profiles another one here has
    already changes elements alone: its interface in each map, going to
    the chains they share, and its address in the sets; relabelled onto
    another endpoint's chains, its elements are replaced in the same
    transaction; gone, they leave.  No libnftables script; the kernel's
    maps are the engine's, and the packets follow them."""
    ns, workloads, status, netns = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        policy("db-from-b", {"selector": "role == 'db'", "ingress": [
                            {"action": "Allow", "source": {"selector": "app == 'b'"}}]}),
                        wep("a"), wep("b", labels={"app": "b"}),
                        wep("d", labels={"role": "db"}, address="10.65.0.4"))
    scripts = counted(monkeypatch, nft, "run")
    engine_run(ns, engine, wep("c"))  # net1's chains, as a's
    assert scripts == [] and kernel_maps(netns) == programmed_maps(engine)
    assert pings(workloads, "a", "c") and not pings(workloads, "b", "c")
    engine_run(ns, engine, wep("c", labels={"role": "db"}))  # d's chains now
    assert scripts == [] and kernel_maps(netns) == programmed_maps(engine)
    assert pings(workloads, "b", "c") and not pings(workloads, "a", "c")  # the policy's
    engine_run(ns, engine, (wep("c")[0], None))
    assert scripts == [] and kernel_maps(netns) == programmed_maps(engine)
    assert "cali" + endpoint_id("c")[:11] not in kernel_maps(netns)[nft.TO_WL_MAP]
    assert not pings(workloads, "b", "c")  # no endpoint's interface: dropped


def test_a_policys_rules_changing_refill_its_chains_through_nfnetlink(host, monkeypatch):
    """A policy whose rules alone change (a port, a range, an action)
    flushes and refills its chains in one nfnetlink transaction: no
    libnftables script, whose table listing costs more than the rules.
    The kernel then holds the rules a fresh engine's script writes, and
    the packets follow the new rules."""
    ns, workloads, status, netns = host

    def ranges(action, port):
        return policy("ranges", {"order": 10, "selector": "has(net1)", "types": ["Ingress"],
                                 "ingress": [{"action": action, "protocol": "ICMP",
                                              "source": {"nets": ["10.65.0.3/32"]}},
                                             {"action": "Allow", "protocol": "TCP",
                                              "source": {"selector": "has(net2)"},
                                              "destination": {"ports": [port, "9000:9100"]}},
                                             {"action": "Pass"}]})
    records = (profile("net1"), profile("net2"), wep("a"), wep("b"), wep("c"))
    engine = engine_run(ns, PolicyEngine(NODE, status), *records, ranges("Deny", 7000))
    assert not pings(workloads, "c", "a") and tcp_open(workloads, "b", "a", 7000)
    scripts, refills = counted(monkeypatch, nft, "run"), counted(monkeypatch, nft, "inet_rules")
    engine_run(ns, engine, ranges("Allow", 7001))
    assert scripts == [] and len(refills) == 1
    assert pings(workloads, "c", "a") and not tcp_open(workloads, "b", "a", 7000)
    assert tcp_open(workloads, "b", "a", 7001) and tcp_open(workloads, "b", "a", 9050)
    listed = ns.submit(nft.run, f"list chain {nft.FAMILY} {nft.TABLE} pi-default.ranges\n")
    with Lab() as lab:  # a fresh engine's script, in a namespace of its own
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns,
                                initargs=(lab.netns("policy-fresh"),)) as fresh:
            engine_run(fresh, PolicyEngine(NODE, status + ".fresh"), *records,
                       ranges("Allow", 7001))
            assert fresh.submit(nft.run, f"list chain {nft.FAMILY} {nft.TABLE} "
                                         "pi-default.ranges\n").result() == listed.result()


def test_an_annotation_only_update_does_not_reprogram_the_table(host, monkeypatch):
    """Join's sandbox annotation and the DNS names written later change
    nothing policy sees: no compile, no nft; the endpoint's deletion does
    (its elements alone: c keeps the chains they share)."""
    ns, workloads, status, _ = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"))
    scripts, elements, compiles = counted(monkeypatch, nft, "run"), \
        counted(monkeypatch, nft, "inet_elements"), counted(monkeypatch, Compiler, "compile")
    sandbox = {SANDBOX_ANNOTATION: "/var/run/docker/netns/0123456789ab"}
    engine_run(ns, engine, wep("a", annotations=sandbox))
    engine_run(ns, engine, wep("a", annotations={
        **sandbox, **names_annotations("net1", ["workload-a", "0123456789ab"])}))
    assert (scripts, elements, compiles) == ([], [], [])
    assert pings(workloads, "a", "c") and not pings(workloads, "a", "b")
    engine_run(ns, engine, (wep("a")[0], None))
    assert (len(scripts), len(elements), len(compiles)) == (0, 1, 1)
    assert not pings(workloads, "a", "c")  # its interface is no endpoint's: dropped


def test_stop_removes_the_table(host):
    ns, workloads, status, _ = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"))
    assert os.path.exists(status)
    assert not pings(workloads, "a", "b")
    ns.submit(engine.stop).result()
    assert pings(workloads, "a", "b")
    assert not os.path.exists(status)
    listing = ns.submit(subprocess.run, ["nft", "list", "tables"], capture_output=True,
                        text=True).result().stdout
    assert nft.TABLE not in listing
    ns.submit(remove_policy).result()  # again: nothing to remove, no error


def test_deny_log_nets_and_port_ranges_with_real_packets(host):
    """Each rule kind a user writes, decided by the kernel: Deny ends
    evaluation before the profile's allow, Log goes on to the next rule,
    source nets, destination notNets and a port range (both ends in it)."""
    ns, workloads, status, _ = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"), policy("ranges", {
                            "order": 10, "selector": "has(net1)", "types": ["Ingress"],
                            "ingress": [
                                {"action": "Log", "protocol": "TCP"},
                                {"action": "Deny", "protocol": "ICMP",
                                 "source": {"nets": ["10.65.0.3/32"]}},
                                {"action": "Allow", "protocol": "TCP",
                                 "source": {"nets": ["10.65.0.0/29"]},
                                 "destination": {"ports": ["7000:7002"]}},
                                {"action": "Pass"}]}),
                        policy("egress-b", {
                            "order": 20, "selector": "has(net2)", "types": ["Egress"],
                            "egress": [{"action": "Deny", "protocol": "TCP",
                                        "destination": {"notNets": ["10.65.0.1/32"]}},
                                       {"action": "Allow"}]}))
    # Deny by source nets: c's pings to a, which net1's profile admits, are
    # refused; a's to c (not in those nets) pass on to the profile.
    assert not pings(workloads, "c", "a")
    assert pings(workloads, "a", "c")
    # The range admits net2's b on TCP 7000-7002, past the Log rule; 7003
    # passes on to net1's profile, which refuses net2.
    assert tcp_open(workloads, "b", "a", 7000) and tcp_open(workloads, "b", "a", 7002)
    assert not tcp_open(workloads, "b", "a", 7003)
    # b's egress: TCP anywhere but a (notNets) is denied, though c's
    # ingress would admit it.
    assert not tcp_open(workloads, "b", "c", 7001)
    # Without the Deny rule c pings a again (the profile decides).
    engine_run(ns, engine, policy("ranges", {
        "order": 10, "selector": "has(net1)", "types": ["Ingress"],
        "ingress": [{"action": "Log", "protocol": "TCP"}, {"action": "Pass"}]}))
    assert pings(workloads, "c", "a")
    assert not tcp_open(workloads, "b", "a", 7001)


def action(value):
    """FELIX_DEFAULTENDPOINTTOHOSTACTION=value."""
    return FelixSettings(default_endpoint_to_host_action=value)


def felix_configuration(name, **spec):
    res = Resource("FelixConfiguration", name, spec=spec)
    return res.key, res.to_json().encode()


def test_workloads_reach_their_host_as_default_endpoint_to_host_action_says(host):
    """Felix's default drops a workload's new connections to its own host,
    DNS to the responder's address excepted; node.<name> wins over default,
    the environment over both; a change applies without a restart."""
    ns, workloads, status, host_ns = host
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"))
    gateway = "169.254.1.1"
    assert not tcp_reaches(workloads["a"], host_ns, gateway, 7070)
    assert tcp_reaches(workloads["a"], host_ns, gateway, 53)  # DNS, whatever the action
    assert pings(workloads, "a", "c")  # between workloads: unchanged
    engine = engine_run(ns, engine, felix_configuration("default",
                                                        defaultEndpointToHostAction="Accept"))
    assert tcp_reaches(workloads["a"], host_ns, gateway, 7070)
    engine = engine_run(ns, engine, felix_configuration(
        "node." + NODE, defaultEndpointToHostAction="drop"))  # any case, as Felix
    assert not tcp_reaches(workloads["a"], host_ns, gateway, 7070)
    assert engine.felix("default_endpoint_to_host_action") == (
        "Drop", "FelixConfiguration node." + NODE)
    engine = engine_run(ns, engine, (felix_configuration("node." + NODE)[0], None))
    assert tcp_reaches(workloads["a"], host_ns, gateway, 7070)
    # Return: on to the host's own rules, which here accept.
    engine = engine_run(ns, PolicyEngine(NODE, status, felix_env=action("Return")),
                        profile("net1"), felix_configuration("node." + NODE,
                                                             defaultEndpointToHostAction="Drop"),
                        wep("a"))
    assert tcp_reaches(workloads["a"], host_ns, gateway, 7070)
    # The workload's egress policy still comes first.
    engine_run(ns, engine, policy("no-egress", {"selector": "has(net1)", "types": ["Egress"],
                                                "egress": [{"action": "Deny"}]}))
    assert not tcp_reaches(workloads["a"], host_ns, gateway, 7070)


def test_workloads_never_reach_the_datastore_unless_a_policy_names_it(host):
    """The etcd endpoints' client ports are closed to workloads beyond this
    host (forward: an "etcd" at workload c's address) and on every address
    of this host (input, here with Accept: etcd here may listen on any of
    them, 169.254.1.1 included), where no rule opens them; an egress rule
    naming a remote endpoint's address and port opens it, a wider CIDR does
    not."""
    ns, workloads, status, host_ns = host
    subprocess.run(["ip", "-n", host_ns, "addr", "add", "10.0.5.1/32", "dev", "lo"], check=True)
    engine = engine_run(ns, PolicyEngine(NODE, status, felix_env=action("Accept"),
                                         etcd_endpoints=("http://10.0.5.1:2379",
                                                         "http://10.65.0.3:2379",
                                                         "http://localhost:2381")),
                        profile("net1"), profile("net2"), wep("a"), wep("b"), wep("c"))

    def reaches(address, port):
        listener = workloads["c"] if address == WORKLOADS["c"][1] else host_ns
        return tcp_reaches(workloads["a"], listener, address, port)

    assert reaches("10.0.5.1", 7070) and reaches("10.65.0.3", 7070)
    assert not reaches("10.0.5.1", 2379) and not reaches("10.65.0.3", 2379)
    assert not reaches("169.254.1.1", 2379)  # the local etcd by another address
    assert not reaches("169.254.1.1", 2381) and not reaches("10.0.5.1", 2381)
    with open(status) as f:
        assert json.load(f)["guarded"] == [
            "tcp 10.0.5.1:2379 (etcd)", "tcp 10.65.0.3:2379 (etcd)",
            "tcp any address of this host:2379 (etcd)",
            "tcp any address of this host:2381 (etcd)"]

    def allow(*nets):
        return policy("etcd-clients", {
            "selector": "has(net1)", "types": ["Egress"],
            "egress": [{"action": "Allow", "protocol": "TCP",
                        "destination": {"nets": list(nets), "ports": ["2000:2400"]}},
                       {"action": "Pass"}]})

    engine = engine_run(ns, engine, allow("10.0.0.0/8"))  # not named: still closed
    assert not reaches("10.0.5.1", 2379) and not reaches("10.65.0.3", 2379)
    engine = engine_run(ns, engine, allow("10.65.0.3/32", "10.0.5.1/32"))
    assert reaches("10.65.0.3", 2379)
    # This host's addresses cannot be named.
    assert not reaches("10.0.5.1", 2379) and not reaches("169.254.1.1", 2379)
    engine_run(ns, engine, (allow()[0], None))
    assert not reaches("10.65.0.3", 2379)


def test_one_host_port_opened_by_policy_as_the_readme_shows(host):
    """README, "Containers and their host": Accept, and an egress policy that
    allows one port of the host, denies the rest of it and passes the rest."""
    ns, workloads, status, host_ns = host
    gateway = "169.254.1.1"
    engine_run(ns, PolicyEngine(NODE, status, felix_env=action("Accept")),
               profile("net1"), profile("net2"), wep("a"), wep("b"), wep("c"),
               policy("host-postgres-only", {
                   "order": 10, "selector": "all()", "types": ["Egress"],
                   "egress": [{"action": "Allow", "protocol": "TCP",
                               "destination": {"nets": [f"{gateway}/32"], "ports": [7070]}},
                              {"action": "Deny", "destination": {"nets": [f"{gateway}/32"]}},
                              {"action": "Pass"}]}))
    assert tcp_reaches(workloads["a"], host_ns, gateway, 7070)
    assert not tcp_reaches(workloads["a"], host_ns, gateway, 7071)
    assert pings(workloads, "a", "c") and not pings(workloads, "a", "b")


@pytest.fixture
def lan(host):
    """Two neighbours of the host, n1 on its eth1 (10.0.7.1 <-> .2) and n2 on
    its eth2 (10.0.8.1 <-> .2), routing the workloads' addresses through it."""
    host_ns = host[3]
    with Lab() as lab:
        neighbours = {}
        for name, subnet in (("n1", 7), ("n2", 8)):
            ns = neighbours[name] = lab.netns(f"policy-{name}")
            lab.veth(host_ns, f"eth{subnet - 6}", ns, "eth0", f"10.0.{subnet}.1/24",
                     f"10.0.{subnet}.2/24")
            lab.route(ns, "10.65.0.0/24", via=f"10.0.{subnet}.1")
        yield neighbours


def host_endpoint(name, interface, *expected_ips, node=NODE, labels=None, profiles=()):
    spec = {"node": node, "interfaceName": interface, "expectedIPs": list(expected_ips),
            "profiles": list(profiles)}
    res = Resource("HostEndpoint", name, spec=spec, metadata={"labels": labels or {}})
    return res.key, res.to_json().encode()


def open_profile(name):
    res = Resource("Profile", name, spec={"ingress": [{"action": "Allow"}],
                                          "egress": [{"action": "Allow"}]})
    return res.key, res.to_json().encode()


def test_host_endpoints_protect_the_host_but_failsafe_ports(host, lan):
    """The "*" endpoint with neither policy nor profile: the host answers
    its neighbours on the failsafe ports only, and opens only those to them;
    forwarded traffic (the workloads') and workloads between them unchanged.
    A policy opens one port to one neighbour, selected by the labels of its
    own (remote) host endpoint; a named endpoint beats "*"; failsafe ports
    come from the FelixConfiguration."""
    ns, workloads, status, host_ns = host
    n1, n2 = lan["n1"], lan["n2"]
    assert tcp_reaches(n1, host_ns, "10.0.7.1", 7070)  # open before
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), profile("net2"),
                        wep("a"), wep("b"), wep("c"),
                        host_endpoint("h1-all", "*", labels={"role": "docker-host"}))
    assert not tcp_reaches(n1, host_ns, "10.0.7.1", 7070)
    assert not tcp_reaches(n2, host_ns, "10.0.8.1", 7070)
    assert tcp_reaches(n1, host_ns, "10.0.7.1", 22)  # failsafe inbound (ssh)
    assert not tcp_reaches(host_ns, n1, "10.0.7.2", 7070)  # the host's own egress
    assert tcp_reaches(host_ns, n1, "10.0.7.2", 2379)  # failsafe outbound (etcd)
    assert pings(workloads, "a", "c") and not pings(workloads, "a", "b")
    assert subprocess.run(["ip", "netns", "exec", workloads["a"], "busybox", "ping", "-c1",
                           "-W1", "10.0.7.2"], capture_output=True).returncode == 0  # forwarded
    with open(status) as f:
        assert json.load(f)["hostEndpoints"] == ["*"]

    # One port, from the neighbour whose host endpoint says it is trusted.
    engine = engine_run(ns, engine, host_endpoint("n2", "eth0", "10.0.8.2", node="n2",
                                                  labels={"trusted": "yes"}),
                        policy("host-7070", {
                            "selector": "role == 'docker-host'", "types": ["Ingress"],
                            "ingress": [{"action": "Allow", "protocol": "TCP",
                                         "source": {"selector": "trusted == 'yes'"},
                                         "destination": {"ports": [7070]}}]}))
    assert tcp_reaches(n2, host_ns, "10.0.8.1", 7070)
    assert not tcp_reaches(n2, host_ns, "10.0.8.1", 7071)
    assert not tcp_reaches(n1, host_ns, "10.0.7.1", 7070)
    assert tcp_reaches(n1, host_ns, "10.0.7.1", 22)

    # eth1's own endpoint, with a profile that allows everything, beats "*".
    engine = engine_run(ns, engine, open_profile("open"),
                        host_endpoint("h1-eth1", "eth1", "10.0.7.1", profiles=["open"]))
    assert tcp_reaches(n1, host_ns, "10.0.7.1", 7070)
    assert tcp_reaches(host_ns, n1, "10.0.7.2", 7070)
    assert not tcp_reaches(n2, host_ns, "10.0.8.1", 7071)  # eth2: still "*"
    # An endpoint without interfaceName: the interface holding its expectedIPs.
    engine = engine_run(ns, engine, host_endpoint("by-address", "", "10.0.8.1",
                                                  profiles=["open"]))
    assert tcp_reaches(n2, host_ns, "10.0.8.1", 7071)
    with open(status) as f:
        assert json.load(f)["hostEndpoints"] == ["*", "eth1", "eth2"]
    engine = engine_run(ns, engine, (host_endpoint("by-address", "")[0], None))

    # No failsafe ports: ssh closes on eth2 too; the environment wins again.
    engine = engine_run(ns, engine, felix_configuration("default", failsafeInboundHostPorts=[]))
    assert not tcp_reaches(n2, host_ns, "10.0.8.1", 22)
    engine = engine_run(ns, PolicyEngine(NODE, status, felix_env=FelixSettings(
        failsafe_inbound_host_ports=(ProtoPort("tcp", 22, "10.0.8.0/24"),))),
        profile("net1"), host_endpoint("h1-all", "*"),
        felix_configuration("default", failsafeInboundHostPorts=[]))
    assert tcp_reaches(n2, host_ns, "10.0.8.1", 22)
    assert not tcp_reaches(n1, host_ns, "10.0.7.1", 22)  # not from that net

    # Without host endpoints the host is open again.
    engine_run(ns, engine, (host_endpoint("h1-all", "*")[0], None))
    assert tcp_reaches(n1, host_ns, "10.0.7.1", 7070)


def test_pre_dnat_policy_of_the_any_interface_endpoint_leaves_workloads_alone(host):
    """A preDNAT Deny selecting the "*" host endpoint refuses nothing a
    workload sends: workloads never meet host endpoint policy (Felix's
    mangle prerouting accepts workload interfaces before it dispatches)."""
    ns, workloads, status, host_ns = host
    gateway = "169.254.1.1"
    engine_run(ns, PolicyEngine(NODE, status, felix_env=action("Accept")),
               profile("net1"), wep("a"), open_profile("open"),
               host_endpoint("h1-all", "*", labels={"role": "docker-host"}, profiles=["open"]),
               policy("pre-deny", {"applyOnForward": True, "preDNAT": True,
                                   "selector": "role == 'docker-host'", "types": ["Ingress"],
                                   "ingress": [{"action": "Deny", "protocol": "TCP",
                                                "destination": {"ports": [7070]}}]}))
    assert tcp_reaches(workloads["a"], host_ns, gateway, 7070)


def test_apply_on_forward_pre_dnat_and_do_not_track_policies(host, lan):
    """eth1's endpoint (role lan) has a profile that allows everything,
    eth2's (role edge) neither profile nor policy: normal policy drops all on
    eth2.  applyOnForward: a workload's ICMP forwarded out of eth1 is denied,
    its TCP allowed, out of eth2 untouched.  preDNAT: a Deny before eth1's
    open profile, an Allow that skips eth2's drop.  doNotTrack: an Allow in
    both directions that also skips it, and leaves no conntrack entry."""
    ns, workloads, status, host_ns = host
    n1, n2 = lan["n1"], lan["n2"]

    def workload_pings(address):
        return subprocess.run(["ip", "netns", "exec", workloads["a"], "busybox", "ping", "-c1",
                               "-W1", address], capture_output=True).returncode == 0

    flagged = {"applyOnForward": True}
    engine_run(ns, PolicyEngine(NODE, status), profile("net1"), wep("a"), open_profile("open"),
               host_endpoint("h1-eth1", "eth1", labels={"role": "lan"}, profiles=["open"]),
               host_endpoint("h1-eth2", "eth2", labels={"role": "edge"}),
               policy("forwarded", {**flagged, "selector": "role == 'lan'", "types": ["Egress"],
                                    "egress": [{"action": "Deny", "protocol": "ICMP"},
                                               {"action": "Allow"}]}),
               policy("pre-deny", {**flagged, "preDNAT": True, "selector": "role == 'lan'",
                                   "types": ["Ingress"],
                                   "ingress": [{"action": "Deny", "protocol": "TCP",
                                                "destination": {"ports": [7070]}}]}),
               policy("pre-allow", {**flagged, "preDNAT": True, "selector": "role == 'edge'",
                                    "types": ["Ingress"],
                                    "ingress": [{"action": "Allow", "protocol": "TCP",
                                                 "destination": {"ports": [7072]}}]}),
               policy("untracked", {**flagged, "doNotTrack": True, "selector": "role == 'edge'",
                                    "types": ["Ingress", "Egress"],
                                    "ingress": [{"action": "Allow", "protocol": "TCP",
                                                 "destination": {"ports": [7073]}}],
                                    "egress": [{"action": "Allow", "protocol": "TCP",
                                                "source": {"ports": [7073]}}]}))
    assert not workload_pings("10.0.7.2") and workload_pings("10.0.8.2")
    assert tcp_reaches(workloads["a"], n1, "10.0.7.2", 7000)
    assert not tcp_reaches(n1, host_ns, "10.0.7.1", 7070)  # preDNAT Deny
    assert tcp_reaches(n1, host_ns, "10.0.7.1", 7071)  # on to eth1's open profile
    assert not tcp_reaches(n2, host_ns, "10.0.8.1", 7071)  # eth2: normal policy drops
    assert tcp_reaches(n2, host_ns, "10.0.8.1", 7072)  # preDNAT Allow is final

    def tracked(port):
        return f"dport={port} " in subprocess.run(
            ["ip", "netns", "exec", host_ns, "cat", "/proc/net/nf_conntrack"],
            capture_output=True, text=True, check=True).stdout

    assert tcp_reaches(n2, host_ns, "10.0.8.1", 7073)  # untracked both ways
    assert tracked(7072) and not tracked(7073)


# Receives in the namespace it runs in, for 1 s, what a Calico host would
# decapsulate: UDP to 4789 (VXLAN) or IP protocol 4 (IPIP; this kernel has no
# ipip module, so a raw socket gets it); prints "got" if the marker came.
_RECEIVE = r"""
import socket, sys
kind, address = sys.argv[1:]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
if kind == "vxlan":
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((address, 4789))
else:
    s = socket.socket(family, socket.SOCK_RAW, 4)
s.settimeout(1)
print("ready", flush=True)
try:
    while b"forged" not in s.recv(2048):
        pass
    print("got")
except TimeoutError:
    pass
"""

# Sends one encapsulated packet to an address: a VXLAN header (VNI 4096) or
# an IPv4 header, then an inner packet from a forged source (10.65.0.2,
# workload b's) whose payload is the marker.
_SEND = r"""
import socket, struct, sys
kind, address = sys.argv[1:]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 26, 0, 0, 64, 17, 0,
                    socket.inet_aton("10.65.0.2"), socket.inet_aton("10.65.0.1")) + b"forged"
if kind == "vxlan":
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.sendto(struct.pack("!II", 0x08000000, 4096 << 8) + inner, (address, 4789))
else:
    s = socket.socket(family, socket.SOCK_RAW, 4)
    s.sendto(inner, (address, 0))
"""


def tunnelled(kind, src_ns, dst_ns, address):
    """Whether a VXLAN or IPIP packet ("vxlan", "ipip") that src_ns sends to
    address, carrying a forged inner source, arrives in dst_ns."""
    receiver = subprocess.Popen(["ip", "netns", "exec", dst_ns, sys.executable, "-c",
                                 _RECEIVE, kind, address], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline() == "ready\n"
        subprocess.run(["ip", "netns", "exec", src_ns, sys.executable, "-c", _SEND, kind,
                        address], check=True, timeout=10)
        return receiver.communicate(timeout=10)[0] == "got\n"
    finally:
        receiver.kill()
        receiver.wait()


def test_tunnels_reach_the_host_only_from_calico_hosts(host, lan):
    """n2 is a Calico host (a Node with its address), n1 is not: while the
    pools use VXLAN (IPv4, IPv6) and IPIP, the host takes them from n2 only,
    before host endpoint policy, as Felix; without such pools nothing is
    dropped.  n1 joining the cluster opens it."""
    ns, workloads, status, host_ns = host
    n1, n2 = lan["n1"], lan["n2"]
    for netns, interface, address in ((host_ns, "eth1", "fd00:7::1"), (n1, "eth0", "fd00:7::2"),
                                      (host_ns, "eth2", "fd00:8::1"), (n2, "eth0", "fd00:8::2")):
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{address}/64", "dev", interface,
                        "nodad"], check=True)
    engine = engine_run(ns, PolicyEngine(NODE, status), profile("net1"), wep("a"),
                        calico_node(NODE, "10.0.7.1/24"),
                        calico_node("n2", "10.0.8.2/24", "fd00:8::2/64"))
    assert tunnelled("vxlan", n1, host_ns, "10.0.7.1")  # no pool uses VXLAN: host policy's
    assert tunnelled("ipip", n1, host_ns, "10.0.7.1")

    engine = engine_run(ns, engine, ip_pool("ipip", "10.65.0.0/24", ipipMode="Always"),
                        ip_pool("vxlan", "10.66.0.0/24", vxlanMode="CrossSubnet"),
                        ip_pool("vxlan6", "fd00:65::/64", vxlanMode="Always"))
    for kind, address in (("vxlan", "10.0.7.1"), ("ipip", "10.0.7.1"), ("vxlan", "fd00:7::1")):
        assert not tunnelled(kind, n1, host_ns, address), (kind, address)
    for kind, address in (("vxlan", "10.0.8.1"), ("ipip", "10.0.8.1"), ("vxlan", "fd00:8::1")):
        assert tunnelled(kind, n2, host_ns, address), (kind, address)
    with open(status) as f:
        written = json.load(f)
    assert written["calicoHosts"] == {"ipv4": 2, "ipv6": 1}
    assert written["encapsulation"] == ["ipip", "vxlan", "vxlan6"]

    # Before host endpoint policy: a "*" endpoint that allows nothing.
    engine = engine_run(ns, engine, host_endpoint("h1-all", "*"))
    assert tunnelled("vxlan", n2, host_ns, "10.0.8.1")
    assert tunnelled("ipip", n2, host_ns, "10.0.8.1")
    assert not tunnelled("vxlan", n1, host_ns, "10.0.7.1")

    engine = engine_run(ns, engine, calico_node("n1", "10.0.7.2/24"))
    assert tunnelled("ipip", n1, host_ns, "10.0.7.1")
    assert tunnelled("vxlan", n1, host_ns, "10.0.7.1")


def test_workloads_send_neither_vxlan_nor_ipip(host, lan):
    """Decapsulated on another host, a workload's VXLAN or IPIP would carry
    its forged inner source past that host's checks: its egress drops both,
    whatever the pools (Felix's default), while the rest of what it sends
    to that host passes."""
    ns, workloads, status, _ = host
    n1 = lan["n1"]
    assert tunnelled("ipip", workloads["a"], n1, "10.0.7.2")  # before the engine
    engine_run(ns, PolicyEngine(NODE, status), profile("net1"), wep("a"))
    assert not tunnelled("ipip", workloads["a"], n1, "10.0.7.2")
    assert not tunnelled("vxlan", workloads["a"], n1, "10.0.7.2")
    assert tcp_reaches(workloads["a"], n1, "10.0.7.2", 7000)
