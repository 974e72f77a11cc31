"""Node registration against a real etcd, and address autodetection in a
namespace with a few interfaces."""

import os

import pytest
from netaddr import IPNetwork

from agent import autodetect
from agent.errors import AutodetectError, NodeConflict
from agent.liveness import Heartbeat, live_nodes
from agent.node import ensure_cluster_information, register
from plugin.config import Config, ConfigError
from datastore.etcd import Etcd
from datastore.felix_configuration import FelixSettings, ProtoPort
from datastore.resources import Resource, Resources
from tests.dataplane.test_dataplane import run_in
from tests.lab import Lab

BEAT = 0.2  # heartbeat interval for these tests: conflicts are decided in 0.6 s
ADDR = IPNetwork("10.0.0.11/24")


@pytest.fixture
def resources(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints)
    yield Resources(etcd)
    etcd.close()


def test_register_creates_then_updates_keeping_other_fields(resources):
    node = register(resources, "h1", ADDR, BEAT)
    assert node.spec == {"bgp": {"ipv4Address": "10.0.0.11/24"}}
    uid = node.metadata["uid"]
    node.spec["ipv4VXLANTunnelAddr"] = "192.168.0.1"
    resources.update(node)
    again = register(resources, "h1", IPNetwork("10.0.0.12/24"), BEAT)
    assert again.spec == {"bgp": {"ipv4Address": "10.0.0.12/24"},
                          "ipv4VXLANTunnelAddr": "192.168.0.1"}
    assert again.metadata["uid"] == uid
    revision = again.revision
    assert register(resources, "h1", IPNetwork("10.0.0.12/24"), BEAT).revision == revision


def test_address_of_a_live_node_is_refused_with_the_fix(resources):
    register(resources, "master", ADDR, BEAT)
    beat = Heartbeat(resources.etcd, "master", str(ADDR), BEAT).start()
    try:
        with pytest.raises(NodeConflict) as err:
            register(resources, "worker", ADDR, BEAT)
    finally:
        beat.stop()
    message = str(err.value)
    assert "Calico node 'master' is already using the IPv4 address 10.0.0.11" in message
    assert "NODENAME" in message and "calico-libnetwork delete node master" in message
    # Stopped cleanly: its key is gone, the node is stale and the address free.
    register(resources, "worker", ADDR, BEAT)


def test_address_of_a_crashed_node_is_taken(resources):
    register(resources, "master", ADDR, BEAT)
    Heartbeat(resources.etcd, "master", str(ADDR), BEAT).beat()  # then "crashes"
    register(resources, "worker", ADDR, BEAT)
    assert resources.get("Node", "worker").spec["bgp"]["ipv4Address"] == str(ADDR)


def test_name_used_by_a_live_agent_elsewhere_is_refused(resources):
    register(resources, "h1", ADDR, BEAT)
    beat = Heartbeat(resources.etcd, "h1", str(ADDR), BEAT).start()
    try:
        with pytest.raises(NodeConflict, match="already running on another host"):
            register(resources, "h1", IPNetwork("10.0.0.99/24"), BEAT)
        # The same host restarting (same address) is no conflict.
        register(resources, "h1", ADDR, BEAT)
    finally:
        beat.stop()


def test_live_nodes_tells_beating_from_still(resources):
    Heartbeat(resources.etcd, "still", "x", BEAT).beat()
    beat = Heartbeat(resources.etcd, "beating", "y", BEAT).start()
    try:
        assert live_nodes(resources.etcd, ["still", "beating", "absent"], BEAT) == {"beating"}
    finally:
        beat.stop()


def test_cluster_information_ready_flag(resources):
    ensure_cluster_information(resources)
    info = resources.get("ClusterInformation", "default")
    assert info.spec["datastoreReady"] is True
    info.spec["datastoreReady"] = False
    resources.update(info)
    ensure_cluster_information(resources)  # an explicit false is left alone
    assert resources.get("ClusterInformation", "default").spec["datastoreReady"] is False
    resources.delete("ClusterInformation", "default")
    resources.create(Resource(kind="ClusterInformation", name="default", spec={"x": 1}))
    ensure_cluster_information(resources)
    assert resources.get("ClusterInformation", "default").spec == {"x": 1, "datastoreReady": True}


def test_agent_settings_from_the_plugin_config():
    config = Config.from_env({"NODENAME": "h1", "IP": "autodetect",
                              "ETCD_ENDPOINTS": "http://10.0.0.1:2379,http://10.0.0.2:2379",
                              "IP_AUTODETECTION_METHOD": "interface=eth.*"})
    s = config.agent
    assert (s.nodename, s.ip, s.ip_autodetection_method) == ("h1", None, "interface=eth.*")
    assert s.etcd.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert Config.from_env({"HOSTNAME": "h2", "IP": "10.0.0.2/24"}).agent.ip == "10.0.0.2/24"
    assert s.felix_env == FelixSettings()  # the FelixConfigurations decide
    felix_env = Config.from_env({"NODENAME": "h1", "FELIX_DEFAULTENDPOINTTOHOSTACTION": "ACCEPT",
                                 "FELIX_FAILSAFEINBOUNDHOSTPORTS": "none",
                                 "FELIX_FAILSAFEOUTBOUNDHOSTPORTS": "udp:53,tcp:[fd00::/64]:22"}) \
        .agent.felix_env
    assert felix_env == FelixSettings("Accept", (), (ProtoPort("udp", 53),
                                                     ProtoPort("tcp", 22, "fd00::/64")))
    for bad in ({"IP": "10.0.0.2"}, {"IP_AUTODETECTION_METHOD": "magic"},
                {"FELIX_DEFAULTENDPOINTTOHOSTACTION": "Allow"},
                {"FELIX_FAILSAFEINBOUNDHOSTPORTS": "sctp:22"},
                {"FELIX_FAILSAFEOUTBOUNDHOSTPORTS": "tcp:10.0.0.0/33:22"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Config.from_env({"NODENAME": "h1", **bad})


# -- autodetection -----------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")


@pytest.fixture
def multihomed():
    """docker0-like and veth decoys first, then eth1 (10.1.0.5/24), then eth2
    (10.2.0.5/16, the default route's interface)."""
    with Lab() as lab:
        ns, other = lab.netns("detect"), lab.netns("detect-peer")
        lab.sink(ns, "docker0", "172.17.0.1/16")
        lab.veth(ns, "veth1", other, "veth1", "10.9.0.1/24")
        lab.veth(ns, "eth1", other, "eth1", "10.1.0.5/24")
        lab.veth(ns, "eth2", other, "eth2", "10.2.0.5/16")
        lab.route(ns, "default", via="10.2.0.1", dev="eth2")
        yield ns


@needs_root
def test_first_found_prefers_the_default_route_interface(multihomed):
    assert run_in(multihomed, autodetect.detect, "first-found") == IPNetwork("10.2.0.5/16")


@needs_root
def test_first_found_without_default_route_takes_the_first_non_excluded(multihomed):
    os.system(f"ip -n {multihomed} route del default")
    assert run_in(multihomed, autodetect.detect, "first-found") == IPNetwork("10.1.0.5/24")


@needs_root
def test_interface_and_can_reach(multihomed):
    assert run_in(multihomed, autodetect.detect, "interface=eth1") == IPNetwork("10.1.0.5/24")
    assert run_in(multihomed, autodetect.detect, "interface=eth[12]") == IPNetwork("10.1.0.5/24")
    assert run_in(multihomed, autodetect.detect, "can-reach=10.1.0.77") == \
        IPNetwork("10.1.0.5/24")
    assert run_in(multihomed, autodetect.detect, "can-reach=8.8.8.8") == IPNetwork("10.2.0.5/16")
    with pytest.raises(AutodetectError, match="eth1, eth2"):
        run_in(multihomed, autodetect.detect, "interface=wlan0")


@needs_root
def test_nothing_to_detect():
    with Lab() as lab:
        ns = lab.netns("detect-empty")
        with pytest.raises(AutodetectError, match="set IP="):
            run_in(ns, autodetect.detect, "first-found")
        with pytest.raises(AutodetectError, match="no route"):
            run_in(ns, autodetect.detect, "can-reach=10.1.2.3")


def test_ipv6_settings_from_the_plugin_config():
    s = Config.from_env({"NODENAME": "h1"}).agent
    assert (s.ip6, s.ip6_autodetection_method) == ("none", "first-found")  # calico/node's
    s = Config.from_env({"NODENAME": "h1", "IP6": "fd00::11/64",
                         "IP6_AUTODETECTION_METHOD": "can-reach=fd00::1"}).agent
    assert (s.ip6, s.ip6_autodetection_method) == ("fd00::11/64", "can-reach=fd00::1")
    assert Config.from_env({"NODENAME": "h1", "IP6": "autodetect"}).agent.ip6 == "autodetect"
    pools = Config.from_env({"NODENAME": "h1", "CALICO_IPV6POOL_VXLAN": "crosssubnet",
                             "CALICO_IPV6POOL_NAT_OUTGOING": "true"}).default_pools
    assert (pools.ipv6_vxlan_mode, pools.ipv6_nat_outgoing) == ("CrossSubnet", True)
    for variable, value in (("IP6", "fd00::11"), ("IP6", "10.0.0.1/24"),
                            ("IP6_AUTODETECTION_METHOD", "magic"),
                            ("CALICO_IPV6POOL_VXLAN", "sometimes"),
                            ("CALICO_IPV6POOL_NAT_OUTGOING", "maybe")):
        with pytest.raises(ConfigError, match=f"^{variable}: "):
            Config.from_env({"NODENAME": "h1", variable: value})


def test_register_writes_and_removes_the_ipv6_address(resources):
    register(resources, "h1", ADDR, BEAT, IPNetwork("fd00::11/64"))
    assert resources.get("Node", "h1").spec["bgp"] == {"ipv4Address": "10.0.0.11/24",
                                                       "ipv6Address": "fd00::11/64"}
    register(resources, "h1", ADDR, BEAT)  # IP6=none, as calico/node: no ipv6Address
    assert resources.get("Node", "h1").spec["bgp"] == {"ipv4Address": "10.0.0.11/24"}


def test_ipv6_address_of_a_live_node_is_refused(resources):
    register(resources, "master", ADDR, BEAT, IPNetwork("fd00::11/64"))
    beat = Heartbeat(resources.etcd, "master", str(ADDR), BEAT).start()
    try:
        with pytest.raises(NodeConflict, match="already using the IPv6 address fd00::11.*IP6"):
            register(resources, "worker", IPNetwork("10.0.0.12/24"), BEAT,
                     IPNetwork("fd00::11/64"))
    finally:
        beat.stop()


@pytest.fixture
def multihomed6():
    """eth1 with fd00:1::5/64, eth2 with fd00:2::5/64 and the default IPv6
    route; every interface has its link-local address too."""
    with Lab() as lab:
        ns, other = lab.netns("detect6"), lab.netns("detect6-peer")
        lab.veth(ns, "eth1", other, "eth1", "10.1.0.5/24")
        lab.veth(ns, "eth2", other, "eth2", "10.2.0.5/16")
        for dev, address in (("eth1", "fd00:1::5/64"), ("eth2", "fd00:2::5/64")):
            os.system(f"ip -n {ns} addr add {address} dev {dev} nodad")
        os.system(f"ip -n {ns} -6 route add default via fd00:2::1 dev eth2")
        yield ns


@needs_root
def test_ipv6_autodetection(multihomed6):
    assert run_in(multihomed6, autodetect.detect, "first-found", 6) == \
        IPNetwork("fd00:2::5/64")
    assert run_in(multihomed6, autodetect.detect, "interface=eth1", 6) == \
        IPNetwork("fd00:1::5/64")
    assert run_in(multihomed6, autodetect.detect, "can-reach=fd00:1::77", 6) == \
        IPNetwork("fd00:1::5/64")
    with pytest.raises(AutodetectError, match="IP6_AUTODETECTION_METHOD.*not an IPv6"):
        run_in(multihomed6, autodetect.detect, "can-reach=10.1.0.77", 6)
    os.system(f"ip -n {multihomed6} -6 addr flush scope global")
    with pytest.raises(AutodetectError, match="no IPv6 address.*IP6="):
        run_in(multihomed6, autodetect.detect, "first-found", 6)


def test_networking_backend_from_the_plugin_config():
    # Unset keeps routing from etcd (README: How it works, BGP).
    s = Config.from_env({"NODENAME": "h1"}).agent
    assert (s.networking_backend, s.bgp) == ("vxlan", False)
    s = Config.from_env({"NODENAME": "h1", "CALICO_NETWORKING_BACKEND": "bird",
                         "CALICO_LIBNETWORK_IFPREFIX": "wl"}).agent
    assert (s.networking_backend, s.bgp, s.workload_prefix) == ("bird", True, "wl")
    assert not Config.from_env({"NODENAME": "h1", "CALICO_NETWORKING_BACKEND": "none"}).agent.bgp
    with pytest.raises(ConfigError, match="^CALICO_NETWORKING_BACKEND: 'gobgp' is not one of"):
        Config.from_env({"NODENAME": "h1", "CALICO_NETWORKING_BACKEND": "gobgp"})
