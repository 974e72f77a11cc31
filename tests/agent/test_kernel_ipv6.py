"""IPv6 routes and NAT outgoing against the real kernel, in throw-away
namespaces, beside IPv4: routes via the other nodes' IPv6 addresses, /128s
for borrowed addresses and blackholes for our blocks appear, are replaced
and removed; routes of other protocols stay; a second run changes nothing."""

import os
import subprocess

import pytest
from netaddr import IPNetwork

from agent import nat
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
