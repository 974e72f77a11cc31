"""IPv6 routes, NAT outgoing and vxlan-v6.calico against the real kernel, in
throw-away namespaces, beside IPv4: routes via the other nodes' IPv6
addresses, /128s for borrowed addresses and blackholes for our blocks
appear, are replaced and removed; routes of other protocols stay; a second
run changes nothing."""

import os
import subprocess

import pytest
from netaddr import IPAddress, IPNetwork

from agent.routing import kernel, nat, vxlan
from agent.routing.reconciler import Reconciler
from agent.routing.routes import FdbEntry, Neighbour
from tests.agent.cluster import affinity_record, block_record, node_record, pool_record, state_of
from tests.agent.test_kernel import reconcile_with
from tests.lab import Lab
from tests.lab.netns import run_in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

ME, ME6 = IPNetwork("10.0.0.1/24"), IPNetwork("fd00:aa::1/64")
POOL6 = "fd00:1::/64"


@pytest.fixture
def host():
    with Lab() as lab:
        ns, peer = lab.netns("agent6-host"), lab.netns("agent6-peer")
        lab.veth(ns, "eth0", peer, "eth0", "10.0.0.1/24", "10.0.0.2/24")
        ip(ns, "addr", "add", str(ME6), "dev", "eth0", "nodad")
        yield ns


def ip(ns, *args):
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


def routes6(ns):
    return sorted(line.strip() for line in ip(ns, "-6", "route", "show", "proto", "80")
                  .splitlines())


def cluster(*extra, h2="fd00:aa::2/64", nat6=False):
    return state_of(node_record("h1", str(ME), address6=str(ME6)),
                    node_record("h2", "10.0.0.2/24", address6=h2),
                    pool_record("p4", "192.168.0.0/16", nat_outgoing=True),
                    pool_record("p6", POOL6, nat_outgoing=nat6), *extra)


def test_ipv6_routes_added_replaced_removed_beside_ipv4(host):
    ip(host, "-6", "route", "add", "fd00:1::c0/122", "via", "fd00:aa::2", "proto", "static")
    first = cluster(affinity_record("h1", "fd00:1::/122"),
                    affinity_record("h2", "fd00:1::40/122"),
                    affinity_record("h2", "fd00:1::c0/122"),  # a foreign route holds it
                    affinity_record("h2", "192.168.1.0/26"),
                    block_record("fd00:1::/122", "h1", [("fd00:1::7", "h2")]))
    run_in(host, reconcile_with, ME6, first)
    assert routes6(host) == sorted([
        "blackhole fd00:1::/122 dev lo metric 1024 pref medium",
        "fd00:1::7 via fd00:aa::2 dev eth0 metric 1024 pref medium",
        "fd00:1::40/122 via fd00:aa::2 dev eth0 metric 1024 pref medium",
    ])
    assert "192.168.1.0/26 via 10.0.0.2 dev eth0 proto 80" in ip(host, "route", "show")
    assert "fd00:1::c0/122 via fd00:aa::2 dev eth0 proto static" in ip(host, "-6", "route")
    # h2 moves, its borrowed address and our block go.
    second = cluster(affinity_record("h2", "fd00:1::40/122"), h2="fd00:aa::9/64")
    assert run_in(host, reconcile_with, ME6, second, second) == [1, 0]
    assert routes6(host) == ["fd00:1::40/122 via fd00:aa::9 dev eth0 metric 1024 pref medium"]
    assert "fd00:1::c0/122 via fd00:aa::2 dev eth0 proto static" in ip(host, "-6", "route")
    # The node goes: its routes go, IPv4 ones too.
    third = state_of(node_record("h1", str(ME), address6=str(ME6)))
    run_in(host, reconcile_with, ME6, third)
    assert routes6(host) == [] and "proto 80" not in ip(host, "route", "show")


def test_ipv6_nat_outgoing_chain_follows_the_pools(host):
    def rules6():
        return subprocess.run(["ip", "netns", "exec", host, "ip6tables", "-t", "nat", "-S"],
                              capture_output=True, text=True, check=True).stdout

    run_in(host, reconcile_with, ME6, cluster(nat6=True))
    rules = rules6()
    assert f"-A POSTROUTING -j {nat.CHAIN}" in rules
    assert f"-A {nat.CHAIN} -d {POOL6} -j RETURN" in rules
    assert f"-A {nat.CHAIN} -s {POOL6} -j MASQUERADE" in rules
    assert "192.168" not in rules
    run_in(host, reconcile_with, ME6, cluster(nat6=False))
    assert f"-A {nat.CHAIN}" not in rules6()


def test_vxlan_v6_device_as_felix_makes_it(host):
    mac = run_in(host, vxlan.ensure_device, IPAddress("fd00:1::1"), None,
                 IPAddress("fd00:aa::1"), 1430)
    details = ip(host, "-d", "link", "show", "vxlan-v6.calico")
    assert "vxlan id 4096" in details and "local fd00:aa::1" in details
    assert "dstport 4789" in details and "nolearning" in details and "mtu 1430" in details
    # No duplicate address detection: usable at once (not "tentative").
    assert "inet6 fd00:1::1/128 scope global nodad" in ip(host, "addr", "show",
                                                         "vxlan-v6.calico")
    assert run_in(host, vxlan.ensure_device, IPAddress("fd00:1::1"), mac,
                  IPAddress("fd00:aa::1"), 1430) == mac
    # A new local address: rebuilt, MAC kept, old tunnel address gone.
    ip(host, "addr", "add", "fd00:aa::5/64", "dev", "eth0", "nodad")
    assert run_in(host, vxlan.ensure_device, IPAddress("fd00:1::2"), mac,
                  IPAddress("fd00:aa::5"), 1430) == mac
    assert "local fd00:aa::5" in ip(host, "-d", "link", "show", "vxlan-v6.calico")
    assert "fd00:1::1/128" not in ip(host, "addr", "show", "vxlan-v6.calico")
    # IPv4's device is another one, untouched.
    assert "vxlan.calico" not in ip(host, "link", "show")


def test_vxlan_v6_routes_neighbours_and_fdb(host):
    """The reconciler routes a node's IPv6 block through vxlan-v6.calico (its
    own VTEP faked as up), with the NDP and FDB entries Felix programs."""
    run_in(host, vxlan.ensure_device, IPAddress("fd00:1::1"), None, IPAddress("fd00:aa::1"),
           1430)
    mac3 = "66:00:00:00:00:03"
    state = state_of(node_record("h1", str(ME), address6=str(ME6)),
                     node_record("h3", "10.0.0.3/24", address6="fd00:bb::3/64",
                                 vtep6_ip="fd00:1::c1", vtep6_mac=mac3),
                     pool_record("p6", POOL6, vxlan_mode="CrossSubnet"),
                     affinity_record("h3", "fd00:1::c0/122"))

    def sync():
        reconciler = Reconciler(None, "h1", ME, resync_interval=30, address6=ME6)
        reconciler._sync_vtep = lambda state, full, version: version == 6
        reconciler.sync(state, full=True)
        return kernel.read_vxlan_peers("vxlan-v6.calico", 6)

    neighbours, fdb = run_in(host, sync)
    assert neighbours == {Neighbour(IPAddress("fd00:1::c1"), mac3)}
    assert fdb == {FdbEntry(mac3, IPAddress("fd00:bb::3"))}
    assert routes6(host) == [
        "fd00:1::c0/122 via fd00:1::c1 dev vxlan-v6.calico metric 1024 onlink pref medium"]
