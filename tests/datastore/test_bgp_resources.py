"""BGPConfiguration and BGPPeer as the CLI validates them and the agent
reads them: calico/node's defaults, libcalico-go's rules, and what this
plugin refuses by name."""

import pytest
from netaddr import IPAddress

from datastore.bgp import (BGPConfiguration, BGPError, BGPPeer, BGPSettings, as_number,
                           duration_seconds, listen_port, peer_address, validate_resource)
from datastore.resources import Resource


def peer(**spec):
    return BGPPeer.from_resource(Resource("BGPPeer", "p", spec))


def configuration(name="default", **spec):
    return BGPConfiguration.from_resource(Resource("BGPConfiguration", name, spec))


def refused(build, message, **spec):
    with pytest.raises(BGPError) as info:
        build(**spec)
    assert message in str(info.value)


@pytest.mark.parametrize("value, number", [(64512, 64512), ("65000", 65000), ("1.10", 65546),
                                           (4294967295, 4294967295)])
def test_as_numbers_as_numorstring_reads_them(value, number):
    assert as_number(value) == number


@pytest.mark.parametrize("value", [0, -1, 2 ** 32, "x", "1.70000", True, 1.5])
def test_bad_as_numbers(value):
    with pytest.raises(ValueError):
        as_number(value)


@pytest.mark.parametrize("text, seconds", [("120s", 120), ("2m", 120), ("1h30m", 5400),
                                           ("1500ms", 2)])
def test_durations(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1", (IPAddress("10.0.0.1"), None)), ("10.0.0.1:1179", (IPAddress("10.0.0.1"), 1179)),
    ("fd00::1", (IPAddress("fd00::1"), None)), ("[fd00::1]:1179", (IPAddress("fd00::1"), 1179))])
def test_peer_addresses(text, expected):
    assert peer_address(text) == expected


@pytest.mark.parametrize("text", ["10.0.0", "10.0.0.1:0", "[fd00::1]", "host.example", ""])
def test_bad_peer_addresses(text):
    with pytest.raises(ValueError):
        peer_address(text)


def test_defaults_are_calico_nodes():
    settings = BGPSettings.effective({}, "h1")
    assert (settings.as_number, settings.node_to_node_mesh, settings.listen_port,
            settings.log_severity) == (64512, True, 179, "Info")


def test_a_nodes_configuration_overrides_listen_port_and_log_severity_only():
    configurations = {"default": configuration(asNumber=65001, listenPort=1179,
                                               nodeToNodeMeshEnabled=False),
                      "node.h1": configuration("node.h1", listenPort=1790,
                                               logSeverityScreen="Debug")}
    h1 = BGPSettings.effective(configurations, "h1")
    assert (h1.as_number, h1.node_to_node_mesh, h1.listen_port, h1.log_severity) == \
        (65001, False, 1790, "Debug")
    assert listen_port(configurations, "h2") == 1179
    refused(configuration, "read only from the BGPConfiguration default",
            name="node.h1", asNumber=1)


def test_configuration_refusals():
    refused(configuration, "spec.nodeMeshPassword: BGP passwords are not supported yet",
            nodeMeshPassword={"secretKeyRef": {"name": "a", "key": "b"}})
    for field in ("serviceClusterIPs", "serviceExternalIPs", "serviceLoadBalancerIPs"):
        refused(configuration, f"spec.{field}: advertising Kubernetes Services is not "
                "supported", **{field: [{"cidr": "10.96.0.0/12"}]})
    refused(configuration, "spec.logSeverityScreen: 'Verbose' is not one of",
            logSeverityScreen="Verbose")
    refused(configuration, "spec.listenPort", listenPort=70000)
    refused(configuration, "spec.nodeToNodeMeshEnabled: 'yes' is not true or false",
            nodeToNodeMeshEnabled="yes")
    refused(configuration, "spec.asNumber", asNumber="x")
    refused(configuration, "spec.colour: unknown field", colour="red")
    refused(configuration, "metadata.name", name="mine")


def test_peers_and_their_rules():
    tor = peer(peerIP="10.0.0.1", asNumber="65000", keepOriginalNextHop=True,
               maxRestartTime="90s")
    assert tor.is_global and tor.as_number == 65000 and tor.max_restart_time == 90
    rr = peer(nodeSelector="all()", peerSelector="route-reflector == 'true'")
    assert not rr.is_global and rr.selects_local("h9", {}) and rr.peer_ip is None
    assert peer(node="h1", peerIP="10.0.0.1", asNumber=1).selects_local("h1", {})
    assert not peer(node="h1", peerIP="10.0.0.1", asNumber=1).selects_local("h2", {})
    refused(peer, "spec.password: BGP passwords are not supported yet", peerIP="10.0.0.1",
            asNumber=1, password={"secretKeyRef": {"name": "a", "key": "b"}})
    refused(peer, "spec.node: must be empty when nodeSelector is specified", node="h1",
            nodeSelector="all()", peerIP="10.0.0.1", asNumber=1)
    refused(peer, "spec.peerIP: must be empty when peerSelector is specified",
            peerIP="10.0.0.1", peerSelector="all()")
    refused(peer, "spec.asNumber: must be empty when peerSelector", asNumber=1,
            peerSelector="all()")
    refused(peer, "spec.asNumber: is needed with peerIP 10.0.0.1", peerIP="10.0.0.1")
    refused(peer, "spec: give peerIP and asNumber", node="h1")
    refused(peer, "spec.nodeSelector", nodeSelector="rack ==", peerIP="10.0.0.1", asNumber=1)
    refused(peer, "spec.filters: BGPFilters are not supported", peerIP="10.0.0.1",
            asNumber=1, filters=["f"])
    refused(peer, "spec.ttlSecurity", peerIP="10.0.0.1", asNumber=1, ttlSecurity=300)


def test_validate_resource_for_the_cli():
    res = Resource("BGPPeer", "tor", {"peerIP": "10.0.0.1", "asNumber": 65000})
    assert validate_resource(res) is res
    pool = Resource("IPPool", "p", {"cidr": "bogus"})
    assert validate_resource(pool) is pool  # not ours to judge
    with pytest.raises(BGPError, match="^BGPPeer bad: spec.peerIP"):
        validate_resource(Resource("BGPPeer", "bad", {"peerIP": "x", "asNumber": 1}))
