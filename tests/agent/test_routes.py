"""The desired routes, ARP and FDB entries from nodes, pools, affinities and
blocks (agent.routing.routes.desired_state): pure, no etcd, no kernel."""

from dataclasses import replace

from netaddr import IPAddress, IPNetwork

from agent.routing.routes import (BLACKHOLE, FdbEntry, Local, Neighbour, Route, VXLAN_DEVICE,
                          desired_state)
from tests.agent.cluster import (affinity_record, block_record, node_record, pool_record,
                                 state_of)
from tests.introspect import feed

MAC2 = "66:00:00:00:00:02"
LOCAL = Local("h1", IPNetwork("10.0.0.1/24"), (IPNetwork("10.0.0.0/24"),))


def net(text):
    return IPNetwork(text)


def base(**pool_options):
    return [node_record("h1", "10.0.0.1/24"), node_record("h2", "10.0.0.2/24"),
            node_record("h3", "10.9.0.3/24", "192.168.2.1", MAC2.replace("02", "03")),
            pool_record("p", "192.168.0.0/16", **pool_options)]


def test_remote_blocks_route_via_their_node_and_own_blocks_are_blackholed():
    state = state_of(*base(), affinity_record("h1", "192.168.0.0/26"),
                     affinity_record("h2", "192.168.1.0/26"))
    desired = desired_state(state, LOCAL)
    assert desired.routes == {
        net("192.168.0.0/26"): Route(net("192.168.0.0/26"), BLACKHOLE),
        net("192.168.1.0/26"): Route(net("192.168.1.0/26"), gateway=IPAddress("10.0.0.2")),
    }


def test_only_confirmed_or_stateless_affinities_route():
    state = state_of(*base(), affinity_record("h2", "192.168.1.0/26", "pending"),
                     affinity_record("h2", "192.168.1.64/26", "pendingDeletion"),
                     affinity_record("h2", "192.168.1.128/26", ""))
    assert list(desired_state(state, LOCAL).routes) == [net("192.168.1.128/26")]


def test_node_off_every_connected_subnet_is_unroutable_without_encapsulation():
    state = state_of(*base(), affinity_record("h3", "192.168.3.0/26"))
    desired = desired_state(state, LOCAL)
    assert desired.routes == {}
    assert "vxlanMode" in desired.unroutable[net("192.168.3.0/26")]


def test_borrowed_address_gets_a_host_route_to_its_holder():
    state = state_of(*base(), affinity_record("h2", "192.168.1.0/26"),
                     block_record("192.168.1.0/26", "h2",
                                  [("192.168.1.5", "h2"), ("192.168.1.9", "h1"),
                                   ("192.168.1.10", "h4")]),
                     # a block nobody owns any more: every address is borrowed
                     block_record("192.168.5.0/26", None, [("192.168.5.1", "h2")]))
    routes = desired_state(state, LOCAL).routes
    assert routes[net("192.168.5.1/32")].gateway == IPAddress("10.0.0.2")
    assert net("192.168.1.9/32") not in routes  # ours: the cali interface has it
    assert net("192.168.1.5/32") not in routes  # inside its own node's block
    assert desired_state(state, LOCAL).unroutable[net("192.168.1.10/32")]  # no Node h4
    # On h2, the address h1 borrowed from h2's block goes to h1.
    h2 = Local("h2", IPNetwork("10.0.0.2/24"), (IPNetwork("10.0.0.0/24"),))
    assert desired_state(state, h2).routes[net("192.168.1.9/32")].gateway == IPAddress("10.0.0.1")


def test_vxlan_always_routes_via_the_remote_vtep_and_programs_arp_and_fdb():
    records = base(vxlan_mode="Always")
    records[1] = node_record("h2", "10.0.0.2/24", "192.168.1.1", MAC2)
    state = state_of(*records, affinity_record("h2", "192.168.1.0/26"))
    local = Local("h1", IPNetwork("10.0.0.1/24"), (), vxlan=True)
    desired = desired_state(state, local)
    assert desired.routes[net("192.168.1.0/26")] == Route(
        net("192.168.1.0/26"), gateway=IPAddress("192.168.1.1"), dev=VXLAN_DEVICE, onlink=True)
    assert Neighbour(IPAddress("192.168.1.1"), MAC2) in desired.neighbours
    assert FdbEntry(MAC2, IPAddress("10.0.0.2")) in desired.fdb
    assert len(desired.fdb) == 2  # h2 and h3, not this node


def test_vxlan_cross_subnet_only_encapsulates_to_other_subnets():
    records = base(vxlan_mode="CrossSubnet")
    records[1] = node_record("h2", "10.0.0.2/24", "192.168.1.1", MAC2)
    state = state_of(*records, affinity_record("h2", "192.168.1.0/26"),
                     affinity_record("h3", "192.168.2.0/26"))
    routes = desired_state(state, replace(LOCAL, vxlan=True)).routes
    assert routes[net("192.168.1.0/26")].dev is None  # same subnet: plain next hop
    assert routes[net("192.168.2.0/26")].dev == VXLAN_DEVICE


def test_vxlan_routes_wait_for_the_device_and_the_remote_vtep():
    records = base(vxlan_mode="Always")
    state = state_of(*records, affinity_record("h2", "192.168.1.0/26"))
    assert "not ready" in desired_state(state, LOCAL).unroutable[net("192.168.1.0/26")]
    local = Local("h1", IPNetwork("10.0.0.1/24"), (), vxlan=True)
    assert "tunnel address" in desired_state(state, local).unroutable[net("192.168.1.0/26")]


def test_ipip_pool_without_kernel_ipip_is_skipped():
    state = state_of(*base(ipip_mode="Always"), affinity_record("h2", "192.168.1.0/26"))
    desired = desired_state(state, LOCAL)
    assert desired.routes == {}
    assert "IPIP" in desired.unroutable[net("192.168.1.0/26")]
    route = desired_state(state, replace(LOCAL, ipip=True)).routes[net("192.168.1.0/26")]
    assert (route.dev, route.gateway, route.onlink) == ("tunl0", IPAddress("10.0.0.2"), True)


def test_ipip_cross_subnet_tunnels_to_other_subnets_only():
    """The routes an IPIP pool asks for when the kernel has IPIP (this one has
    not: tunl0 itself and the encapsulation are tested nowhere here)."""
    state = state_of(*base(ipip_mode="CrossSubnet"), affinity_record("h2", "192.168.1.0/26"),
                     affinity_record("h3", "192.168.2.0/26"),
                     block_record("192.168.0.0/26", "h1", [("192.168.0.9", "h3")]))
    routes = desired_state(state, replace(LOCAL, ipip=True)).routes
    assert routes[net("192.168.1.0/26")] == Route(net("192.168.1.0/26"),
                                                   gateway=IPAddress("10.0.0.2"))
    assert routes[net("192.168.2.0/26")] == Route(net("192.168.2.0/26"),
                                                   gateway=IPAddress("10.9.0.3"), dev="tunl0",
                                                   onlink=True)
    # An address h3 borrowed from this node's block: through the tunnel too.
    assert routes[net("192.168.0.9/32")].dev == "tunl0"


def test_deleting_keys_removes_routes():
    state = state_of(*base(), affinity_record("h2", "192.168.1.0/26"))
    key, _ = affinity_record("h2", "192.168.1.0/26")
    assert feed(state, key, None)
    assert desired_state(state, LOCAL).routes == {}
    node_key, _ = node_record("h2", "x")
    state = state_of(*base(), affinity_record("h2", "192.168.1.0/26"))
    feed(state, node_key, None)
    assert desired_state(state, LOCAL).routes == {}


def test_stale_double_affinity_goes_to_the_block_record_owner():
    state = state_of(*base(), affinity_record("h2", "192.168.1.0/26"),
                     affinity_record("h1", "192.168.1.0/26"),
                     block_record("192.168.1.0/26", "h2"))
    route = desired_state(state, LOCAL).routes[net("192.168.1.0/26")]
    assert route.gateway == IPAddress("10.0.0.2")


def test_unrelated_and_unreadable_keys_are_ignored():
    state = state_of(*base())
    assert not feed(state, "/calico/ipam/v2/handle/x", b"{}")
    assert not feed(state, "/calico/ipam/v2/host/h2", b"{}")
    assert not feed(state, "/calico/ipam/v2/assignment/ipv4/block/1.2.3.0-26", b"not json")


def test_with_bird_plain_pools_are_birds_and_vxlan_pools_stay_ours():
    """CALICO_NETWORKING_BACKEND=bird: remote blocks and borrowed addresses of
    unencapsulated pools come from BGP; own blackholes and VXLAN routes stay."""
    state = state_of(*base(), pool_record("v", "10.50.0.0/16", vxlan_mode="Always"),
                     affinity_record("h1", "192.168.0.0/26"),
                     affinity_record("h2", "192.168.1.0/26"),
                     block_record("192.168.1.0/26", "h2", [("192.168.1.9", "h3")]),
                     affinity_record("h3", "10.50.3.0/26"))
    local = replace(LOCAL, vxlan=True, bgp=True)
    desired = desired_state(state, local)
    assert desired.routes == {
        net("192.168.0.0/26"): Route(net("192.168.0.0/26"), BLACKHOLE),
        net("10.50.3.0/26"): Route(net("10.50.3.0/26"), gateway=IPAddress("192.168.2.1"),
                                   dev=VXLAN_DEVICE, onlink=True),
    }
    assert desired.unroutable == {}
