"""IPv6 across hosts: three Docker hosts with IPv6 addresses on their links,
each with dockerd, the plugin and its node agent, sharing one etcd (on h1);
a dual-stack network (`docker network create --ipv6`), containers pinging
each other over IPv6 across hosts, directly and through vxlan-v6.calico, a
borrowed address's /128, NAT outgoing for the IPv6 pool, and a node's
removal taking its routes away.

    h1 eth1 10.0.42.1 fd00:42::1 --+                 +-- h3 eth1 10.0.43.3 fd00:43::3
    h2 eth1 10.0.42.2 fd00:42::2 --+-- br0 -- router -+
                                              router eth4 fd00:99::fe -- outside fd00:99::1

The IPv6 pool is CrossSubnet VXLAN: h1 <-> h2 is plain routing on their
segment, anything to or from h3 goes through vxlan-v6.calico.  h1 finds its
IPv6 address (IP6=autodetect, interface=eth1), h2 and h3 are told theirs.
The router knows no route to the IPv6 pool, so the outside host can answer a
container only when its traffic was masqueraded.
"""

import json
import types

import pytest
from netaddr import IPAddress, IPNetwork

from tests.e2e.calico_host import (CALICO, IPV4_POOL, IPV6_POOL, calicoctl, container_ip, docker,
                                   has_route, node, routes, wait,
                                   source_seen_outside, start_plugin)
from tests.lab import EtcdServer
from tests.lab.common import ip

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

ETCD_HOST = "10.0.42.1"
OUTSIDE6 = "fd00:99::1"
LINK6 = {"h1": "fd00:42::1", "h2": "fd00:42::2", "h3": "fd00:43::3"}
AGENT_ADDRESSES = {
    "h1": {"IP": "10.0.42.1/24", "IP6": "autodetect", "IP6_AUTODETECTION_METHOD": "interface=eth1"},
    "h2": {"IP": "10.0.42.2/24", "IP6": "fd00:42::2/64"},
    "h3": {"IP": "10.0.43.3/24", "IP6": "fd00:43::3/64"}}
BLOCK6 = 122


class Cluster:
    def __init__(self, hosts, etcd, outside):
        self.hosts = {h.name: h for h in hosts}
        self.etcd, self.outside = etcd, outside
        self.plugins = {}

    def start_plugin(self, host):
        self.plugins[host.name] = start_plugin(host, CALICO_IPV6POOL_NAT_OUTGOING="true",
                                               CALICO_IPV6POOL_VXLAN="CrossSubnet",
                                               **AGENT_ADDRESSES[host.name])
        return self.plugins[host.name]


def addr6(netns, ifname, cidr):
    ip("addr", "add", cidr, "dev", ifname, "nodad", netns=netns)


@pytest.fixture(scope="module")
def cluster(docker_host_factory):
    lab = docker_host_factory.lab
    hosts = [docker_host_factory(etcd=False) for _ in range(3)]
    h1, h2, h3 = hosts
    seg, router, outside = lab.netns("seg6"), lab.netns("router6"), lab.netns("outside6")
    ip("link", "add", "br0", "type", "bridge", netns=seg)
    ip("link", "set", "br0", "up", netns=seg)
    for n, host in ((1, h1), (2, h2)):
        lab.veth(host.netns, "eth1", seg, f"p{n}", f"10.0.42.{n}/24")
        addr6(host.netns, "eth1", f"{LINK6[host.name]}/64")
        ip("link", "set", f"p{n}", "master", "br0", netns=seg)
        lab.route(host.netns, "10.0.43.0/24", via="10.0.42.254")
        for dst in ("fd00:43::/64", "fd00:99::/64"):
            ip("-6", "route", "add", dst, "via", "fd00:42::fe", netns=host.netns)
    lab.veth(router, "eth1", seg, "p3", "10.0.42.254/24")
    addr6(router, "eth1", "fd00:42::fe/64")
    ip("link", "set", "p3", "master", "br0", netns=seg)
    lab.veth(router, "eth3", h3.netns, "eth1", "10.0.43.254/24", "10.0.43.3/24")
    addr6(router, "eth3", "fd00:43::fe/64")
    addr6(h3.netns, "eth1", f"{LINK6['h3']}/64")
    lab.route(h3.netns, "10.0.42.0/24", via="10.0.43.254")
    for dst in ("fd00:42::/64", "fd00:99::/64"):
        ip("-6", "route", "add", dst, "via", "fd00:43::fe", netns=h3.netns)
    lab.veth(router, "eth4", outside, "eth0")
    addr6(router, "eth4", "fd00:99::fe/64")
    addr6(outside, "eth0", f"{OUTSIDE6}/64")
    ip("-6", "route", "add", "default", "via", "fd00:99::fe", netns=outside)
    for sysctl in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        ip("netns", "exec", router, "sysctl", "-qw", sysctl)

    etcd = EtcdServer(host=ETCD_HOST, netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    for host in (h2, h3):
        host.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    c = Cluster(hosts, etcd, outside)
    for host in hosts:
        c.start_plugin(host)
        docker(host, "network", "create", "--ipv6", *CALICO, "net6")
        docker(host, "network", "create", "--ipv6", *CALICO, "--subnet", IPV4_POOL,
               "--subnet", IPV6_POOL, "net6s")
    yield c


# -- helpers -----------------------------------------------------------------

def run(host, name, network, *extra):
    docker(host, "run", "-tid", "--net", network, "--name", name, *extra, "busybox")
    return container_ip(host, name, network, "GlobalIPv6Address")


def pings6(host, container, target):
    return host.docker("exec", container, "ping", "-6", "-c", "2", "-W", "2",
                       target).returncode == 0


def has_route6(host, text):
    return has_route(host, text, family=6)


def block6_of(address):
    return IPNetwork(f"{address}/{BLOCK6}").cidr


# -- tests -------------------------------------------------------------------

def test_nodes_registered_with_their_ipv6_addresses(cluster):
    for name, address6 in (("h1", "fd00:42::1/64"), ("h2", "fd00:42::2/64"),
                           ("h3", "fd00:43::3/64")):
        assert node(cluster, name)["spec"]["bgp"]["ipv6Address"] == address6


def test_dual_stack_containers_ping_each_other_over_ipv6_across_hosts(cluster):
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip6_a = run(h1, "workload-A", "net6")
    ip6_e = run(h2, "workload-E", "net6")
    assert IPAddress(ip6_a) in IPNetwork(IPV6_POOL) and IPAddress(ip6_e) in IPNetwork(IPV6_POOL)
    wait(lambda: has_route6(h1, f"{block6_of(ip6_e)} via fd00:42::2 dev eth1 proto 80"), 10,
         "h1's route to h2's IPv6 block")
    wait(lambda: has_route6(h2, f"{block6_of(ip6_a)} via fd00:42::1 dev eth1 proto 80"), 10,
         "h2's route to h1's IPv6 block")
    assert has_route6(h1, f"blackhole {block6_of(ip6_a)} dev lo proto 80")
    assert pings6(h1, "workload-A", ip6_e)
    assert pings6(h2, "workload-E", ip6_a)
    # IPv4 still goes as before.
    assert h1.docker("exec", "workload-A", "ping", "-c", "2", "-W", "2",
                     container_ip(h2, "workload-E", "net6")).returncode == 0


def test_networks_are_isolated_over_ipv6_too(cluster):
    """The policy sets hold every endpoint's /128 as well: another network
    is refused over IPv6 across hosts, both ways, as over IPv4, while its own
    network's containers are reached on the same path."""
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip6_a = container_ip(h1, "workload-A", "net6", "GlobalIPv6Address")
    ip6_other = run(h2, "other-net", "net6s")
    ip6_other_b = run(h1, "other-net-b", "net6s")
    wait(lambda: pings6(h2, "other-net", ip6_other_b), 10, "other-net to reach its network on h1")
    assert pings6(h1, "other-net-b", ip6_other)
    assert not pings6(h2, "other-net", ip6_a)
    assert not pings6(h1, "workload-A", ip6_other)
    assert pings6(h1, "workload-A", container_ip(h2, "workload-E", "net6", "GlobalIPv6Address"))


def test_vxlan_v6_to_a_host_on_another_ipv6_subnet(cluster):
    h1, h2, h3 = (cluster.hosts[n] for n in ("h1", "h2", "h3"))
    ip6_f = run(h3, "workload-F", "net6")
    spec = node(cluster, "h3")["spec"]
    vtep = spec["ipv6VXLANTunnelAddr"]
    assert IPAddress(vtep) in IPNetwork(IPV6_POOL) and spec["vxlanTunnelMACAddrV6"]
    assert "ipv6VXLANTunnelAddr" in node(cluster, "h1")["spec"]  # every host has its VTEP
    details = ip("-d", "link", "show", "vxlan-v6.calico", netns=h3.netns).stdout
    assert "vxlan id 4096" in details and "local fd00:43::3" in details
    assert "dstport 4789" in details
    for host in (h1, h2):
        wait(lambda: has_route6(host, f"{block6_of(ip6_f)} via {vtep} dev vxlan-v6.calico "
                                      "proto 80"), 15,
             f"{host.name}'s route to h3's block through vxlan-v6.calico")
    assert pings6(h1, "workload-A", ip6_f)
    assert pings6(h3, "workload-F", container_ip(h2, "workload-E", "net6", "GlobalIPv6Address"))
    # h1 <-> h2 stays plain routing on their segment.
    ip6_e = container_ip(h2, "workload-E", "net6", "GlobalIPv6Address")
    assert has_route6(h1, f"{block6_of(ip6_e)} via fd00:42::2 dev eth1 proto 80")


def test_status_lists_the_ipv6_peer_and_its_blocks(cluster):
    h1 = cluster.hosts["h1"]
    report = json.loads(calicoctl(h1, "status", "-o", "json", "--plugin-dir",
                                  str(h1.plugin_dir)).stdout)
    peer = next(p for p in report["peers"] if p["name"] == "h2")
    assert peer["ipv6Address"] == "fd00:42::2/64"
    v6 = [b for b in peer["blocks"] if ":" in b["cidr"]]
    assert v6 and all(b["route"] and "via fd00:42::2" in b["route"] for b in v6)


def test_borrowed_ipv6_address_gets_a_128_that_goes_with_its_container(cluster):
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip6_a = run(h1, "pinger-s", "net6s")
    borrowed = str(IPAddress(int(block6_of(ip6_a).first) + 40, 6))  # in h1's block
    docker(h2, "run", "-tid", "--net", "net6s", "--ip6", borrowed, "--name", "borrower",
           "busybox")
    wait(lambda: has_route6(h1, f"{borrowed} via fd00:42::2 dev eth1 proto 80"), 10,
         "h1's /128 to the address h2 borrowed")
    assert pings6(h1, "pinger-s", borrowed)
    docker(h2, "rm", "-f", "borrower")
    wait(lambda: not has_route6(h1, borrowed + " "), 10, "the /128 to go")


def test_nat_outgoing_for_the_ipv6_pool_shows_the_host_address(cluster):
    h1 = cluster.hosts["h1"]
    assert source_seen_outside(h1, "workload-A", cluster.outside, OUTSIDE6) == LINK6["h1"]


def test_removing_a_node_removes_its_ipv6_routes(cluster):
    """Last in this module: h2 goes away, then comes back (its dockerd needs
    the plugin to remove its containers)."""
    h1, h2 = cluster.hosts["h1"], cluster.hosts["h2"]
    ip6_e = container_ip(h2, "workload-E", "net6", "GlobalIPv6Address")
    assert has_route6(h1, f"{block6_of(ip6_e)} via fd00:42::2")
    cluster.plugins["h2"].stop()
    try:
        calicoctl(h1, "delete", "node", "h2")
        wait(lambda: not any("fd00:42::2" in r for r in routes(h1, "proto", "80", family=6)), 10,
             "h1's IPv6 routes to h2 to go")
        assert node(cluster, "h2") is None
    finally:
        cluster.start_plugin(h2)
    # Back again: its block lost its affinity, so its container's address is
    # routed on its own (a /128), and answers.
    wait(lambda: has_route6(h1, f"{ip6_e} via fd00:42::2 dev eth1 proto 80"), 15,
         "h1's /128 to workload-E")
    assert pings6(h1, "workload-A", ip6_e)
