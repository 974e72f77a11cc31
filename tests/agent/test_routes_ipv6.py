"""IPv6 in the desired routes (agent.routing.routes.desired_state): the same rules
as IPv4, via the nodes' bgp.ipv6Address; pure, no etcd, no kernel."""

from dataclasses import replace

from netaddr import IPAddress, IPNetwork

from agent.routing.routes import BLACKHOLE, VXLAN6_DEVICE, Local, Route, desired_state
from tests.agent.cluster import (affinity_record, block_record, node_record, pool_record,
                                 state_of)

POOL6 = "fd00:1::/64"
MAC2 = "66:00:00:00:00:02"
LOCAL = Local("h1", IPNetwork("10.0.0.1/24"),
              (IPNetwork("10.0.0.0/24"), IPNetwork("fd00:aa::/64")),
              address6=IPNetwork("fd00:aa::1/64"))


def net(text):
    return IPNetwork(text)


def cluster(*extra, **pool_options):
    return state_of(
        node_record("h1", "10.0.0.1/24", address6="fd00:aa::1/64"),
        node_record("h2", "10.0.0.2/24", address6="fd00:aa::2/64"),
        node_record("h3", "10.0.0.3/24", address6="fd00:bb::3/64", vtep6_ip="fd00:1::c1",
                    vtep6_mac=MAC2),
        node_record("h4", "10.0.0.4/24"),  # IP6=none
        pool_record("p4", "192.168.0.0/16"), pool_record("p6", POOL6, **pool_options),
        *extra)


def test_ipv6_blocks_route_via_the_nodes_ipv6_address_beside_ipv4():
    state = cluster(affinity_record("h1", "fd00:1::/122"), affinity_record("h2", "fd00:1::40/122"),
                    affinity_record("h2", "192.168.1.0/26"))
    assert desired_state(state, LOCAL).routes == {
        net("fd00:1::/122"): Route(net("fd00:1::/122"), BLACKHOLE),
        net("fd00:1::40/122"): Route(net("fd00:1::40/122"), gateway=IPAddress("fd00:aa::2")),
        net("192.168.1.0/26"): Route(net("192.168.1.0/26"), gateway=IPAddress("10.0.0.2")),
    }


def test_borrowed_ipv6_address_gets_a_128_to_its_holder():
    state = cluster(affinity_record("h2", "fd00:1::40/122"),
                    block_record("fd00:1::40/122", "h2", [("fd00:1::41", "h2"),
                                                          ("fd00:1::42", "h1")]),
                    block_record("fd00:1::80/122", None, [("fd00:1::81", "h2")]))
    routes = desired_state(state, LOCAL).routes
    assert routes[net("fd00:1::81/128")] == Route(net("fd00:1::81/128"),
                                                  gateway=IPAddress("fd00:aa::2"))
    assert net("fd00:1::42/128") not in routes  # ours: on the cali interface
    assert net("fd00:1::41/128") not in routes  # inside its own node's block


def test_nodes_without_ipv6_and_nodes_off_subnet_are_unroutable_with_the_reason():
    state = cluster(affinity_record("h4", "fd00:1::40/122"),
                    affinity_record("h3", "fd00:1::80/122"))
    desired = desired_state(state, LOCAL)
    assert desired.routes == {}
    assert "bgp.ipv6Address" in desired.unroutable[net("fd00:1::40/122")]
    assert "not on a subnet" in desired.unroutable[net("fd00:1::80/122")]


def test_this_node_without_ipv6_still_blackholes_its_own_ipv6_blocks():
    state = cluster(affinity_record("h1", "fd00:1::/122"), affinity_record("h2", "fd00:1::40/122"))
    desired = desired_state(state, replace(LOCAL, address6=None))
    assert desired.routes == {net("fd00:1::/122"): Route(net("fd00:1::/122"), BLACKHOLE)}
    assert "IP6" in desired.unroutable[net("fd00:1::40/122")]


def test_ipv6_cross_subnet_goes_through_vxlan_v6():
    state = cluster(affinity_record("h2", "fd00:1::40/122"),
                    affinity_record("h3", "fd00:1::80/122"), vxlan_mode="CrossSubnet")
    desired = desired_state(state, LOCAL)
    assert desired.routes[net("fd00:1::40/122")].dev is None  # same subnet: direct
    assert "vxlan-v6.calico is not ready" in desired.unroutable[net("fd00:1::80/122")]
    routes = desired_state(state, replace(LOCAL, vxlan6=True)).routes
    assert routes[net("fd00:1::80/122")] == Route(
        net("fd00:1::80/122"), gateway=IPAddress("fd00:1::c1"), dev=VXLAN6_DEVICE, onlink=True)
