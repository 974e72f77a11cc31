"""The datastore guard without a kernel: which destinations the etcd
endpoints give (names resolved; every endpoint's port on every address of
this host),
and which rules name one explicitly.  tests/agent/test_policy_kernel.py
sends real packets at it."""

import logging

from agent.policy.compiler import Compiler
from agent.policy.guarded import LOCAL, Guarded, datastore_destinations, guard_rules
from tests.agent.policy_records import NODE, gnp, interface, profile, state_of, wep

ETCD = Guarded("10.0.0.1", 2379, "etcd")
ETCD6 = Guarded("fd00::1", 2379, "etcd")


def test_endpoints_give_their_addresses_of_every_family_and_their_port_here(caplog):
    """Each endpoint's port on every address of this host (etcd here may
    listen on any), and its addresses of every family; loopback ones only here."""
    assert datastore_destinations(("http://10.0.0.1:2379", "https://[fd00::1]:2379")) == \
        {ETCD, ETCD6, Guarded(LOCAL, 2379, "etcd")}
    assert datastore_destinations(("http://localhost:2381", "http://127.0.0.1")) == \
        {Guarded(LOCAL, 2381, "etcd"), Guarded(LOCAL, 2379, "etcd")}
    with caplog.at_level(logging.WARNING):
        assert datastore_destinations(("http://etcd.invalid:4001",)) == \
            {Guarded(LOCAL, 4001, "etcd")}
    assert "cannot resolve etcd endpoint http://etcd.invalid:4001" in caplog.text


def test_guard_rules_by_family():
    assert guard_rules([ETCD, ETCD6, Guarded("10.0.0.2", 4001, "etcd"),
                        Guarded(LOCAL, 2379, "etcd")]) == [
        "ip daddr . tcp dport { 10.0.0.1 . 2379, 10.0.0.2 . 4001 } drop",
        "ip6 daddr . tcp dport { fd00::1 . 2379 } drop",
        "fib daddr type local tcp dport { 2379 } drop"]


def egress_chain(*records):
    chains = Compiler(NODE, frozenset({ETCD, ETCD6})).compile(state_of(*records))
    return chains.rules[chains.egress[interface("a")]], \
        chains.rules[chains.ingress[interface("a")]]


def test_the_guard_opens_only_for_a_rule_naming_address_and_port():
    egress, ingress = egress_chain(profile("net1"), wep("a"))
    assert egress[:2] == tuple(guard_rules([ETCD, ETCD6]))
    assert not any("2379" in rule for rule in ingress)

    def opened(nets, ports=(2379,), protocol="TCP", action="Allow"):
        rule = {"action": action, "protocol": protocol,
                "destination": {"nets": nets, "ports": list(ports)}}
        if protocol != "TCP":
            del rule["destination"]["ports"]
        egress, _ = egress_chain(profile("net1"), wep("a"),
                                 gnp("etcd", selector="has(net1)", types=["Egress"],
                                     egress=[rule]))
        return [g for g in (ETCD, ETCD6) if guard_rules([g])[0] not in egress]

    assert opened(["10.0.0.1/32"]) == [ETCD]
    assert opened(["fd00::1/128"], ["2000:2400"]) == [ETCD6]
    assert opened(["10.0.0.0/8"]) == []  # a wider CIDR names nothing
    assert opened(["10.0.0.1/32"], [2380]) == []
    assert opened(["10.0.0.1/32"], protocol="UDP") == []
    assert opened(["10.0.0.1/32"], action="Deny") == []
    # The rule must apply to the endpoint: a profile's egress rule counts.
    egress, _ = egress_chain(profile("net1", egress=[
        {"action": "Allow", "protocol": "TCP",
         "destination": {"nets": ["10.0.0.1/32"], "ports": [2379]}}]), wep("a"))
    assert guard_rules([ETCD])[0] not in egress and guard_rules([ETCD6])[0] in egress
