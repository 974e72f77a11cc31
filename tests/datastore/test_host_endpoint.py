"""HostEndpoint and the failsafe ports as the agent and the CLI read them:
the model, Felix's string form of port lists, and the precedence of the
environment over node.<name> over default over Felix's defaults."""

import pytest

from datastore.felix_configuration import (FAILSAFE_INBOUND, FAILSAFE_OUTBOUND,
                                           FelixConfigurationError, FelixSettings, ProtoPort,
                                           port_list, resolve)
from datastore.host_endpoint import host_endpoint_from_resource
from datastore.policy import PolicyError
from datastore.resources import Resource


def hep(**spec):
    return Resource("HostEndpoint", "h1-eth0", spec={"node": "h1", **spec},
                    metadata={"labels": {"role": "lan"}})


def test_a_host_endpoint_by_its_addresses():
    parsed = host_endpoint_from_resource(hep(expectedIPs=["10.0.0.1"]))
    assert (parsed.interface, parsed.expected_ips) == ("", ("10.0.0.1",))


def test_a_host_endpoint_as_policy_sees_it():
    parsed = host_endpoint_from_resource(hep(interfaceName="*", expectedIPs=["10.0.0.1",
                                                                             "fd00::1"],
                                             profiles=["open"]))
    assert (parsed.interface, parsed.expected_ips, parsed.labels, parsed.profiles) == (
        "*", ("10.0.0.1", "fd00::1"), {"role": "lan"}, ("open",))


@pytest.mark.parametrize("spec, path", [
    ({"interfaceName": "eth0", "node": ""}, "spec.node"),
    ({"expectedIPs": []}, "spec: needs interfaceName"),
    ({"interfaceName": "a-very-long-interface"}, "spec.interfaceName"),
    ({"interfaceName": "eth0", "expectedIPs": [17]}, "spec.expectedIPs[0]"),
    ({"interfaceName": "eth0", "profiles": ["Bad"]}, "spec.profiles[0]"),
    ({"interfaceName": "eth0", "ports": [{"name": "ssh", "port": 22}]}, "spec.ports"),
    ({"interfaceName": "eth0", "interfacename": "eth1"}, "spec.interfacename"),
])
def test_what_a_host_endpoint_may_not_be(spec, path):
    with pytest.raises(PolicyError, match=f"HostEndpoint h1-eth0: {path.replace('[', '.')}"):
        host_endpoint_from_resource(hep(**spec))


def test_felix_port_lists():
    assert port_list("22, udp:68,TCP:10.0.0.0/8:2379,tcp:[fd00::/64]:22", "X") == (
        ProtoPort("tcp", 22), ProtoPort("udp", 68), ProtoPort("tcp", 2379, "10.0.0.0/8"),
        ProtoPort("tcp", 22, "fd00::/64"))
    assert port_list("none", "X") == port_list("NONE", "X") == ()
    assert [str(p) for p in port_list("tcp:10.1.2.3:22,tcp:[fd00::1]:22", "X")] == [
        "tcp:10.1.2.3/32:22", "tcp:[fd00::1/128]:22"]
    for bad in ("sctp:22", "tcp:70000", "tcp:a:b:c:d", "tcp:10.0.0.0/33:22", "tcp:ssh"):
        with pytest.raises(FelixConfigurationError, match="X: "):
            port_list(bad, "X")


def test_failsafe_ports_by_felixs_precedence():
    node = FelixSettings(failsafe_inbound_host_ports=(ProtoPort("tcp", 22),))
    default = FelixSettings.from_resource(Resource("FelixConfiguration", "default", spec={
        "failsafeInboundHostPorts": [], "failsafeOutboundHostPorts": [
            {"protocol": "UDP", "port": 53, "net": "10.0.0.0/8"}]}))
    configurations = {"node.h1": node, "default": default}
    assert resolve("failsafe_inbound_host_ports", FelixSettings(), "h1", configurations) == (
        (ProtoPort("tcp", 22),), "FelixConfiguration node.h1")
    assert resolve("failsafe_inbound_host_ports", FelixSettings(), "h2", configurations) == (
        (), "FelixConfiguration default")  # an empty list: none
    assert resolve("failsafe_outbound_host_ports", FelixSettings(), "h2", configurations) == (
        (ProtoPort("udp", 53, "10.0.0.0/8"),), "FelixConfiguration default")
    env = FelixSettings.from_env({"FELIX_FAILSAFEINBOUNDHOSTPORTS": "none"})
    assert resolve("failsafe_inbound_host_ports", env, "h1", configurations) == (
        (), "FELIX_FAILSAFEINBOUNDHOSTPORTS")
    assert resolve("failsafe_inbound_host_ports", FelixSettings(), "h1", {}) == (
        FAILSAFE_INBOUND, "default")
    assert [str(p) for p in FAILSAFE_OUTBOUND] == [  # Felix's, config_params.go
        "udp:53", "udp:67", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443",
        "tcp:6666", "tcp:6667"]
