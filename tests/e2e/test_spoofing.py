"""Forged source addresses, with real packets between two Docker hosts: a
container that sends with another container's address (IPv4 and IPv6; a
UDP datagram, an ICMP echo request, a TCP SYN) reaches nothing, on its own
host or the other, while containers' own addresses still pass where policy
lets them; counted at the receiving containers (/proc/net/snmp, snmp6).

    h1 eth1 10.0.31.1/24 fd00:31::1/64 ------------ h2 eth1 10.0.31.2/24 fd00:31::2/64
    `run`: node agent, policy                        `run --no-agent`, policy off

h2 is the host where only the plugin's start-up and Join can protect
anything: no node agent runs there (and CALICO_LIBNETWORK_POLICY=false), so
nothing enforces policy and the hosts route the pools to each other with
static routes, as something other than our agent (BIRD) would.  On h1 a
forged source from a net1 container is one that net1's profile admits.

    h1: a1 (net1, whose addresses are forged), b1 (net1), m1 (net2, forges)
    h2: b2 (net1), m2 (net2, forges)
"""

import types

import pytest

from tests.e2e import reach
from tests.e2e.calico_host import (ANTISPOOFING_TABLE, CALICO, IPV4_POOL, IPV6_POOL, container_ip,
                                   docker, nft_tables, start_plugin, wait)
from tests.lab import EtcdServer
from tests.lab.common import ip

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

LINK = {"h1": ("10.0.31.1", "fd00:31::1"), "h2": ("10.0.31.2", "fd00:31::2")}
PORT = 9  # nothing listens: UDP counts as NoPorts, a SYN is answered by a RST


@pytest.fixture(scope="module")
def lab(docker_host_factory):
    lab = docker_host_factory.lab
    h1, h2 = (docker_host_factory(etcd=False) for _ in range(2))
    lab.veth(h1.netns, "eth1", h2.netns, "eth1", f"{LINK['h1'][0]}/24", f"{LINK['h2'][0]}/24")
    for host, peer in ((h1, h2), (h2, h1)):
        ip("addr", "add", f"{LINK[host.name][1]}/64", "dev", "eth1", "nodad", netns=host.netns)
        for pool, via in ((IPV4_POOL, LINK[peer.name][0]), (IPV6_POOL, LINK[peer.name][1])):
            lab.route(host.netns, pool, via=via)
    etcd = EtcdServer(host=LINK["h1"][0], netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    h2.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    h1.plugin = start_plugin(h1, IP=f"{LINK['h1'][0]}/24", IP6=f"{LINK['h1'][1]}/64")
    h2.plugin = start_plugin(h2, "--no-agent", CALICO_LIBNETWORK_POLICY="false")
    for host in (h1, h2):
        for net in ("net1", "net2"):
            docker(host, "network", "create", "--ipv6", *CALICO, net)
    cast = ((h1, "a1", "net1"), (h1, "b1", "net1"), (h1, "m1", "net2"),
            (h2, "b2", "net1"), (h2, "m2", "net2"))
    nodes = {name: reach.container(host, name, net) for host, name, net in cast}
    ip6 = {nodes[name]: container_ip(host, name, net, "GlobalIPv6Address")
           for host, name, net in cast}
    return types.SimpleNamespace(h1=h1, ip6=ip6, **nodes)


def from_senders(n):
    """What n senders' forge() of both families add to a receiver."""
    return {"icmp4": n, "udp4": n, "icmp6": n, "udp6": n, "tcp": 2 * n}


def test_forged_sources_reach_nothing_own_addresses_still_do(lab):
    a1, b1, m1, b2, m2 = lab.a1, lab.b1, lab.m1, lab.b2, lab.m2
    expected = {b1: from_senders(1), b2: from_senders(2)}

    def send_both_families(src, source, dst):
        reach.forge(src, source.ip, dst, PORT)
        reach.forge(src, lab.ip6[source], lab.ip6[dst], PORT)

    def send_own():
        # a1 to its network on both hosts, m2 to b2 (h2 enforces no policy).
        for sender, victim in ((a1, b1), (a1, b2), (m2, b2)):
            send_both_families(sender, sender, victim)

    def arrived_since(before):
        return {v.name: reach.arrived_since(v, before[v], expected[v]) for v in expected}

    # Own addresses pass (and every neighbour on the way is resolved).
    before = {v: reach.arrivals(v) for v in expected}
    send_own()
    assert arrived_since(before) == {v.name: n for v, n in expected.items()}

    # a1's addresses from net2's containers, which b1 and b2 would admit;
    # then the own sends again: once they have arrived, so has all before.
    before = {v: reach.arrivals(v) for v in expected}
    for attacker, victim in ((m1, b1), (m1, b2), (m2, b2), (m2, b1)):
        send_both_families(attacker, a1, victim)
    send_own()
    assert arrived_since(before) == {v.name: n for v, n in expected.items()}


def test_the_agent_writes_the_table_again_when_it_is_gone(lab):
    """`nft flush ruleset` or a reload of the nftables service takes it;
    the agent (h1) writes it again within seconds."""
    lab.h1.run_in_netns(["nft", "delete", *ANTISPOOFING_TABLE.split()])
    wait(lambda: ANTISPOOFING_TABLE in nft_tables(lab.h1), 30, "the anti-spoofing table on h1")
