"""Three Docker hosts in network namespaces, each with dockerd, the plugin
and the node agent, sharing one etcd (on host 1): Calico's Docker docs
scenario across hosts, VXLAN to a host on another subnet, a fixed --ip
moved between hosts, restarts, an etcd outage and NAT outgoing; isolation
between networks (ICMP, TCP, UDP, on one host and across hosts), a Profile
and a GlobalNetworkPolicy opening one port, containers started later,
Docker's own bridge network beside ours, and the policy table going away
on SIGTERM.

    h1 eth1 10.0.12.1 --+                              +-- h3 eth1 10.0.13.3
    h2 eth1 10.0.12.2 --+-- br0 (seg) -- router -------+
                                         router eth4 10.0.99.254 -- outside 10.0.99.1

The pool is CrossSubnet VXLAN: h1 <-> h2 is plain routing on their
segment, anything to or from h3 goes through vxlan.calico.
"""

import copy
import json
import signal
import time
import types
from pathlib import Path

import pytest
import yaml
from netaddr import IPAddress, IPNetwork

from tests.e2e import reach
from tests.e2e.calico_host import (ANTISPOOFING_TABLE, CALICO, IPV4_POOL, POLICY_TABLE, calicoctl,
                                   container_ip, docker, docker_fails, has_route, nft_tables, node,
                                   routes, source_seen_outside, start_plugin, wait)
from tests.lab import EtcdServer
from tests.lab.common import ip

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

ETCD_HOST = "10.0.12.1"
OUTSIDE = "10.0.99.1"
ALWAYS_POOL = "10.77.0.0/16"  # a second pool, vxlanMode Always
HOST_ADDRESSES = {"h1": "10.0.12.1", "h2": "10.0.12.2", "h3": "10.0.13.3"}
AGENT_ADDRESSES = {"h1": {"IP_AUTODETECTION_METHOD": "interface=eth1"},
                   "h2": {"IP_AUTODETECTION_METHOD": f"can-reach={ETCD_HOST}"},
                   "h3": {"IP": "10.0.13.3/24"}}


class Cluster:
    def __init__(self, hosts, lab, etcd, outside):
        self.hosts = {h.name: h for h in hosts}
        self.lab, self.etcd, self.outside = lab, etcd, outside
        self.plugins = {}

    def start_plugin(self, host):
        """`calico-libnetwork run`, which also runs the node agent."""
        self.plugins[host.name] = start_plugin(host, CALICO_IPV4POOL_VXLAN="CrossSubnet",
                                               **AGENT_ADDRESSES[host.name])
        return self.plugins[host.name]


@pytest.fixture(scope="module")
def cluster(docker_host_factory):
    lab = docker_host_factory.lab
    hosts = [docker_host_factory(etcd=False) for _ in range(3)]
    h1, h2, h3 = hosts
    seg, router, outside = lab.netns("seg"), lab.netns("router"), lab.netns("outside")
    ip("link", "add", "br0", "type", "bridge", netns=seg)
    ip("link", "set", "br0", "up", netns=seg)
    for n, host in ((1, h1), (2, h2)):
        lab.veth(host.netns, "eth1", seg, f"p{n}", f"10.0.12.{n}/24")
        ip("link", "set", f"p{n}", "master", "br0", netns=seg)
        lab.route(host.netns, "10.0.13.0/24", via="10.0.12.254")
        lab.route(host.netns, "10.0.99.0/24", via="10.0.12.254")
    lab.veth(router, "eth1", seg, "p3", "10.0.12.254/24")
    ip("link", "set", "p3", "master", "br0", netns=seg)
    lab.veth(router, "eth3", h3.netns, "eth1", "10.0.13.254/24", "10.0.13.3/24")
    lab.veth(router, "eth4", outside, "eth0", "10.0.99.254/24", f"{OUTSIDE}/24")
    lab.route(h3.netns, "10.0.12.0/24", via="10.0.13.254")
    lab.route(h3.netns, "10.0.99.0/24", via="10.0.13.254")
    lab.route(outside, "default", via="10.0.99.254")
    ip("netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    etcd = EtcdServer(host=ETCD_HOST, netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    for host in (h2, h3):
        host.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    c = Cluster(hosts, lab, etcd, outside)
    for host in hosts:
        c.start_plugin(host)
    for host in hosts:
        for net in ("net1", "net2"):
            docker(host, "network", "create", *CALICO, net)
    for host in (h1, h2):
        docker(host, "network", "create", *CALICO, "--subnet", IPV4_POOL, "net3")
    yield c


# -- helpers -----------------------------------------------------------------

def run(host, name, network, *extra):
    docker(host, "run", "-tid", "--net", network, "--name", name, *extra, "busybox")
    return container_ip(host, name, network)


def on_network(host, network):
    """A container on `network` on `host`, made on first use: networks are
    isolated, so only a container of the target's own network may ping it."""
    name = f"pinger-{network}"
    if host.docker("inspect", "--type", "container", name).returncode:
        run(host, name, network)
    return name


def pings(host, container, target):
    return host.docker("exec", container, "ping", "-c", "2", "-W", "2", target).returncode == 0


def block_of(address):
    return IPNetwork(f"{address}/26").cidr


# -- tests -------------------------------------------------------------------

def test_nodes_registered_with_detected_addresses(cluster):
    for name, address in (("h1", "10.0.12.1/24"), ("h2", "10.0.12.2/24"),
                          ("h3", "10.0.13.3/24")):
        wait(lambda: cluster.etcd.get(
            f"/calico/resources/v3/projectcalico.org/nodes/{name}") is not None, 20,
            f"Node {name}")
        assert node(cluster, name)["spec"]["bgp"]["ipv4Address"] == address


def test_docs_scenario_across_two_hosts(cluster):
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip_a = run(h1, "workload-A", "net1")
    run(h1, "workload-B", "net2")
    ip_c = run(h1, "workload-C", "net1")
    run(h2, "workload-D", "net2")
    ip_e = run(h2, "workload-E", "net1")
    block_1, block_2 = block_of(ip_a), block_of(ip_e)
    assert block_1 != block_2
    # The guides' `route -n`: the other host's block via it, our /32s on cali.
    wait(lambda: has_route(h1, f"{block_2} via 10.0.12.2 dev eth1 proto 80"), 10,
         f"h1's route to {block_2}")
    wait(lambda: has_route(h2, f"{block_1} via 10.0.12.1 dev eth1 proto 80"), 10,
         f"h2's route to {block_1}")
    assert f"blackhole {block_1} proto 80" in routes(h1)
    assert any(line.startswith(f"{ip_c} dev cali") for line in routes(h1))
    assert pings(h1, "workload-A", ip_c)
    assert pings(h1, "workload-A", ip_e)
    assert pings(h2, "workload-E", ip_a)


def test_vxlan_to_a_host_on_another_subnet(cluster):
    h1, h3 = cluster.hosts["h1"], cluster.hosts["h3"]
    ip_f = run(h3, "workload-F", "net1")
    ip_a = container_ip(h1, "workload-A", "net1")
    h3_node = node(cluster, "h3")["spec"]
    vtep, mac = h3_node["ipv4VXLANTunnelAddr"], h3_node["vxlanTunnelMACAddr"]
    assert IPAddress(vtep) in IPNetwork(IPV4_POOL)
    wait(lambda: has_route(h1, f"{block_of(ip_f)} via {vtep} dev vxlan.calico proto 80 onlink"),
         15, "h1's VXLAN route to h3's block")
    neigh = ip("neigh", "show", "dev", "vxlan.calico", netns=h1.netns).stdout
    assert f"{vtep} lladdr {mac} PERMANENT" in neigh
    device = ip("-d", "link", "show", "vxlan.calico", netns=h1.netns).stdout
    assert "vxlan id 4096" in device and "local 10.0.12.1" in device
    fdb = ip("netns", "exec", h1.netns, "bridge", "fdb", "show", "dev", "vxlan.calico").stdout
    assert f"{mac} dst 10.0.13.3 self permanent" in fdb
    assert pings(h3, "workload-F", ip_a)
    assert pings(h1, "workload-A", ip_f)


def vxlan_tx_packets(host):
    link = json.loads(ip("-s", "-j", "link", "show", "vxlan.calico", netns=host.netns).stdout)
    return link[0]["stats64"]["tx"]["packets"]


def test_vxlan_always_between_hosts_on_one_subnet(cluster):
    """A pool with vxlanMode Always tunnels between h1 and h2 although they
    share a subnet (the CrossSubnet pool routes them directly)."""
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    calicoctl(h1, "pool", "create", ALWAYS_POOL, "--name", "vxlan-always", "--vxlan-mode",
              "Always")
    try:
        for host in (h1, h2):
            docker(host, "network", "create", *CALICO, "--subnet", ALWAYS_POOL, "tunnelled")
        ip_1, ip_2 = run(h1, "tunnelled-1", "tunnelled"), run(h2, "tunnelled-2", "tunnelled")
        vtep = {name: node(cluster, name)["spec"]["ipv4VXLANTunnelAddr"] for name in ("h1", "h2")}
        for host, peer, address in ((h1, "h2", ip_2), (h2, "h1", ip_1)):
            wait(lambda: has_route(host, f"{block_of(address)} via {vtep[peer]} dev vxlan.calico "
                                         "proto 80 onlink"), 15,
                 f"{host.name}'s VXLAN route to {peer}'s block of the Always pool")
        sent = vxlan_tx_packets(h1)
        assert pings(h1, "tunnelled-1", ip_2) and pings(h2, "tunnelled-2", ip_1)
        assert vxlan_tx_packets(h1) >= sent + 2  # h1's requests and replies, tunnelled
        # The CrossSubnet pool's block of h2 (its tunnel address's) stays direct.
        assert has_route(h1, f"{block_of(vtep['h2'])} via 10.0.12.2 dev eth1 proto 80")
    finally:
        for host, name in ((h1, "tunnelled-1"), (h2, "tunnelled-2")):
            host.docker("rm", "-f", name)
            host.docker("network", "rm", "tunnelled")
        calicoctl(h1, "pool", "delete", "vxlan-always", check=False)


def test_borrowed_address_routes_come_and_go(cluster):
    h1, h2, h3 = (cluster.hosts[n] for n in ("h1", "h2", "h3"))
    ip_a = container_ip(h1, "workload-A", "net1")
    borrowed = str(IPAddress(int(block_of(ip_a).first) + 40))  # in h1's block
    run(h2, "borrower", "net3", "--ip", borrowed)
    wait(lambda: has_route(h1, f"{borrowed} via 10.0.12.2 dev eth1 proto 80"), 10,
         "h1's /32 to the address h2 borrowed")
    wait(lambda: has_route(h3, f"{borrowed} via"), 10, "h3's /32 to it")
    assert pings(h1, on_network(h1, "net3"), borrowed)
    docker(h2, "rm", "-f", "borrower")
    wait(lambda: not has_route(h1, borrowed + " "), 10, "the /32 to go on h1")
    wait(lambda: not has_route(h3, borrowed + " "), 10, "the /32 to go on h3")


def test_a_fixed_address_moves_to_another_host(cluster):
    """A container with a fixed --ip moved from h1 to h2: refused on h2 while
    h1 holds the address, taken on h2 as soon as h1 lets it go (h2 used to
    refuse it again on its own older copy of the block)."""
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip_a = container_ip(h1, "workload-A", "net1")
    address = str(IPAddress(int(block_of(ip_a).first) + 41))  # in h1's block
    try:
        run(h1, "mover", "net3", "--ip", address)
        err = docker_fails(h2, "run", "-tid", "--net", "net3", "--name", "mover",
                           "--ip", address, "busybox")
        assert f"{address} is already in use" in err
        docker(h2, "rm", "-f", "mover")  # created, never started
        docker(h1, "rm", "-f", "mover")
        assert run(h2, "mover", "net3", "--ip", address) == address
    finally:
        for host in (h1, h2):
            host.docker("rm", "-f", "mover")


def test_agent_and_plugin_restarts_keep_traffic_and_routes(cluster):
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip_e = container_ip(h2, "workload-E", "net1")
    before = routes(h2, "proto", "80")
    cluster.plugins["h2"].kill()  # the whole process group: plugin and agent
    assert POLICY_TABLE in nft_tables(h2)  # kill -9 leaves the policy
    assert pings(h1, "workload-A", ip_e)
    plugin = cluster.start_plugin(h2)
    wait(lambda: "full sync" in plugin.log_tail(), 20, "the restarted agent's first sync")
    assert "(no change)" in plugin.log_tail()
    assert routes(h2, "proto", "80") == before
    assert pings(h1, "workload-A", ip_e)


def test_etcd_outage_keeps_traffic_and_agents_catch_up(cluster):
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip_e = container_ip(h2, "workload-E", "net1")
    cluster.etcd.stop()
    try:
        time.sleep(12)  # longer than the agents' watch idle timeout
        assert pings(h1, "workload-A", ip_e)
    finally:
        cluster.etcd.start()
    # A new block, claimed by h2 after etcd came back, gets routed on h1.
    fresh = "192.169.250.5"
    run(h2, "late", "net3", "--ip", fresh)
    wait(lambda: has_route(h1, f"{block_of(fresh)} via 10.0.12.2"), 30,
         "h1's route to h2's new block")
    # h2's agent, too, must have caught up: it programs the new endpoint's
    # policy (an endpoint it does not know yet drops everything).
    pinger = on_network(h1, "net3")
    wait(lambda: pings(h1, pinger, fresh), 30, "h1's net3 container to reach h2's new one")


def test_nat_outgoing_shows_the_host_address(cluster):
    h1 = cluster.hosts["h1"]
    assert source_seen_outside(h1, "workload-A", cluster.outside, OUTSIDE) == "10.0.12.1"


# -- isolation between networks ------------------------------------------------
#
# Each network's Profile lets in only its own members (ingress from has(<net>)),
# so containers of different networks do not reach each other, on one host or
# across hosts; hosts reach their own containers.  Probes run from the
# containers' network namespaces (tests/e2e/reach.py), all at once.

PORT, OTHER_PORT = 7001, 7002  # every probe workload serves TCP and UDP on both
ENFORCED_WITHIN = 1.0  # seconds from a change to the datastore to the kernel enforcing it
WORKLOADS = {"A": ("h1", "net1"), "B": ("h1", "net2"), "C": ("h1", "net1"),
             "D": ("h2", "net2"), "E": ("h2", "net1"),
             "F": ("h3", "net1"), "G": ("h3", "net2")}


@pytest.fixture(scope="module")
def wl(cluster):
    """The docs scenario's workloads A-F (made here if no earlier test did)
    and G on net2 on h3, each serving TCP and UDP on PORT and OTHER_PORT."""
    return {k: reach.workload(cluster.hosts[h], f"workload-{k}", net, (PORT, OTHER_PORT))
            for k, (h, net) in WORKLOADS.items()}


def assert_reach(cases):
    wrong = reach.mismatches(cases, PORT)
    assert not wrong, "\n".join(wrong)


def assert_enforced_in_time(result, what):
    times, took = result
    print(f"{what} (the change took {took:.3f} s):")
    for watch, seconds in times.items():
        print(f"  {watch} {'never' if seconds is None else f'{seconds:+.3f} s'} after it")
    late = {w: t for w, t in times.items() if t is None or t > ENFORCED_WITHIN}
    assert not late, f"{what}: not enforced within {ENFORCED_WITHIN} s: {late}"


def test_same_network_reaches_other_networks_do_not(cluster, wl):
    w = wl
    same = [(w["A"], w["C"]),  # one host
            (w["A"], w["E"]), (w["B"], w["D"]),  # h1 <-> h2, routed on their segment
            (w["A"], w["F"]), (w["D"], w["G"])]  # h1 <-> h3 and h2 <-> h3, VXLAN
    other = [(w["A"], w["B"]),  # one host
             (w["A"], w["D"]), (w["E"], w["B"]),  # h1 <-> h2
             (w["A"], w["G"]), (w["F"], w["D"])]  # VXLAN
    assert_reach(reach.both_ways(same, True) + reach.both_ways(other, False))


def test_hosts_reach_their_containers_and_containers_not_their_host(cluster, wl):
    """Host to container is not filtered; container to its own host meets
    DefaultEndpointToHostAction, Drop by default as in Felix."""
    cases = []
    for workload in wl.values():
        host = reach.host_node(workload.host, HOST_ADDRESSES[workload.host.name])
        cases += [(host, workload, "icmp", True), (host, workload, "tcp", True),
                  (workload, host, "icmp", False)]
    assert_reach(cases)


def net2_into_net1(w, port_open):
    """What a policy opening TCP PORT from net2 into net1 must change, and
    what it must leave alone."""
    return [(w["B"], w["A"], "tcp", port_open), (w["D"], w["A"], "tcp", port_open),
            (w["G"], w["A"], "tcp", port_open), (w["D"], w["E"], "tcp", port_open),
            (w["B"], w["F"], "tcp", port_open)] + [
        (w["B"], w["A"], f"tcp/{OTHER_PORT}", False),  # that port only
        (w["G"], w["F"], f"tcp/{OTHER_PORT}", False),
        (w["B"], w["A"], "udp", False), (w["B"], w["A"], "icmp", False),  # TCP only
        (w["D"], w["E"], "icmp", False),
        (w["A"], w["B"], "tcp", False), (w["E"], w["D"], "tcp", False),  # into net1 only
        (w["A"], w["C"], "icmp", True), (w["A"], w["F"], "tcp", True),  # net1 as before
        (w["B"], w["D"], "tcp", True)]  # net2 as before


def timed_watches(w):
    """One net2 -> net1 connection per host's ingress (h1, h2, h3), and one across hosts."""
    return [(w["B"], w["A"], PORT), (w["D"], w["E"], PORT), (w["G"], w["F"], PORT),
            (w["D"], w["A"], PORT)]


def test_profile_applied_with_the_cli_opens_one_port(cluster, wl):
    h1 = cluster.hosts["h1"]
    original = yaml.safe_load(calicoctl(h1, "get", "profile", "net1", "-o", "yaml").stdout)
    original["metadata"].pop("resourceVersion", None)
    opened = copy.deepcopy(original)
    opened["spec"]["ingress"].append({"action": "Allow", "protocol": "TCP",
                                      "source": {"selector": "has(net2)"},
                                      "destination": {"ports": [PORT]}})
    # The CLI runs in h1's network namespace only: it reads files as we do.
    files = {}
    for name, doc in (("net1-opened", opened), ("net1-original", original)):
        files[name] = str(h1.dir / f"{name}.yaml")
        Path(files[name]).write_text(yaml.safe_dump(doc))
    try:
        result = reach.enforcement_times(
            lambda: calicoctl(h1, "apply", "-f", files["net1-opened"]),
            timed_watches(wl), "open")
        assert_enforced_in_time(result, "Profile net1 + TCP from net2")
        assert_reach(net2_into_net1(wl, True))
    finally:
        result = reach.enforcement_times(
            lambda: calicoctl(h1, "apply", "-f", files["net1-original"]),
            timed_watches(wl), "closed")
    assert_enforced_in_time(result, "Profile net1 as it was")
    assert_reach(net2_into_net1(wl, False))


def test_global_network_policy_opens_one_port(cluster, wl):
    h1 = cluster.hosts["h1"]
    # Selected by a policy, an endpoint drops what no policy allows (the end
    # of the tier): the last rule passes the rest on to the Profiles.
    policy = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "net2-to-net1"},
              "spec": {"selector": "has(net1)",
                       "ingress": [{"action": "Allow", "protocol": "TCP",
                                    "source": {"selector": "has(net2)"},
                                    "destination": {"ports": [PORT]}},
                                   {"action": "Pass"}]}}
    path = h1.dir / "net2-to-net1.yaml"
    path.write_text(yaml.safe_dump(policy))
    try:
        result = reach.enforcement_times(lambda: calicoctl(h1, "apply", "-f", str(path)),
                                         timed_watches(wl), "open")
        assert_enforced_in_time(result, "GlobalNetworkPolicy net2-to-net1 applied")
        assert_reach(net2_into_net1(wl, True))
    finally:
        result = reach.enforcement_times(
            lambda: calicoctl(h1, "delete", "globalnetworkpolicy", "net2-to-net1"),
            timed_watches(wl), "closed")
    assert_enforced_in_time(result, "GlobalNetworkPolicy net2-to-net1 deleted")
    assert_reach(net2_into_net1(wl, False))


def test_a_container_started_later_is_admitted_by_its_network_only(cluster, wl):
    w, h2, h3 = wl, cluster.hosts["h2"], cluster.hosts["h3"]
    late = {}
    for host, name, network, peer in ((h3, "newcomer-1", "net1", "A"),
                                      (h2, "newcomer-2", "net2", "B")):
        before = time.time()
        docker(host, "run", "-tid", "--net", network, "--name", name, "busybox")
        ran = time.time()
        newcomer = reach.container(host, name, network)
        # From `docker run` returning: its host's rules for it, and its
        # address in the peer's host's sets (a refusal from the newcomer,
        # which serves nothing yet, is an answer).
        times, _ = reach.enforcement_times(lambda: None, [(w[peer], newcomer, PORT),
                                                          (newcomer, w[peer], PORT)],
                                           "open", since=ran)
        assert_enforced_in_time((times, ran - before),
                                f"docker run {name} on {network} on {host.name}")
        late[name] = reach.serve(newcomer, (PORT,))
    n1, n2 = late["newcomer-1"], late["newcomer-2"]
    assert_reach(reach.both_ways([(n1, w["A"]), (n1, w["F"]), (n1, w["E"]),
                                  (n2, w["B"]), (n2, w["D"]), (n2, w["G"])], True)
                 + reach.both_ways([(n1, w["B"]), (n1, w["G"]), (n1, n2),
                                    (n2, w["A"]), (n2, w["E"])], False))


def test_docker_bridge_network_works_beside_ours(cluster):
    h1 = cluster.hosts["h1"]
    docker(h1, "network", "create", "plain")
    try:
        gateway = docker(h1, "network", "inspect", "-f",
                         "{{(index .IPAM.Config 0).Gateway}}", "plain")
        run(h1, "plain-1", "plain")
        ip_2 = run(h1, "plain-2", "plain")
        for target in (ip_2, gateway, HOST_ADDRESSES["h1"]):
            assert pings(h1, "plain-1", target), f"plain-1 does not reach {target}"
    finally:
        h1.docker("rm", "-f", "plain-1", "plain-2")
        h1.docker("network", "rm", "plain")


def test_sigterm_removes_the_policy_table(cluster, wl):
    """Last in this module: it stops h3's plugin, then starts it again."""
    h3 = cluster.hosts["h3"]
    assert POLICY_TABLE in nft_tables(h3)
    plugin = cluster.plugins["h3"]
    plugin.stop()  # SIGTERM; the plugin stops its agent
    assert plugin.popen.returncode != -signal.SIGKILL, "the plugin ignored SIGTERM for 10 s"
    tables = nft_tables(h3)
    assert POLICY_TABLE not in tables, plugin.log_tail()
    # Not policy: forged sources stay refused for the containers left.
    assert ANTISPOOFING_TABLE in tables
    # The host as it was without us: nothing filters its containers.
    assert_reach([(wl["G"], wl["F"], "icmp", True)])
    plugin = cluster.start_plugin(h3)
    wait(lambda: POLICY_TABLE in nft_tables(h3), 20,
         "the restarted agent's table")
    assert_reach([(wl["G"], wl["F"], "icmp", False), (wl["A"], wl["F"], "icmp", True)])
