"""datastore/policy.py: the Profile / GlobalNetworkPolicy model and its
validation.  Resources are built in memory; no etcd."""

import copy

import pytest
import yaml
from netaddr import IPNetwork

from datastore.policy import (
    EGRESS,
    INGRESS,
    EntityRule,
    GlobalNetworkPolicy,
    IcmpMatch,
    PolicyError,
    PortRange,
    Rule,
    default_types,
    display_name,
    policy_from_resource,
    policy_warnings,
    profile_from_resource,
    storage_name,
    validate_resource,
)
from datastore.resources import Resource
from datastore.selector import parse
from tests.introspect import rule_selectors, selectors_of


def load(text: str) -> list[Resource]:
    return [Resource.from_dict(doc) for doc in yaml.safe_load(text)]


def gnp(spec, name="db", **kw) -> Resource:
    return Resource(kind="GlobalNetworkPolicy", name=name, spec=spec, **kw)


def profile(spec, name="net1", **kw) -> Resource:
    return Resource(kind="Profile", name=name, spec=spec, **kw)


def rule_of(rule: dict, direction="ingress") -> Rule:
    """The single rule of a policy holding only `rule`."""
    pol = policy_from_resource(gnp({direction: [rule]}))
    return (pol.ingress if direction == "ingress" else pol.egress)[0]


def refused(res: Resource, path: str, *words: str) -> str:
    """Assert res is refused, naming path and each of words; the message."""
    check = profile_from_resource if res.kind == "Profile" else policy_from_resource
    with pytest.raises(PolicyError) as info:
        check(res)
    message = str(info.value)
    assert message.startswith(f"{res.kind} {res.name}: {path}: "), message
    assert info.value.path == path
    for word in words:
        assert word in message, message
    return message


def refused_rule(rule: dict, path: str, *words: str) -> str:
    return refused(gnp({"ingress": [rule]}), f"spec.ingress[0].{path}", *words)


# ---------------------------------------------------------------------------
# §7 tutorials, corrected (Allow/TCP, spec.labelsToApply)

DEFAULT_NETWORK_PROFILE = """
- apiVersion: projectcalico.org/v3
  kind: Profile
  metadata:
    name: net1
  spec:
    labelsToApply:
      net1: ""
    ingress:
    - action: Allow
      source:
        selector: has(net1)
    egress:
    - action: Allow
"""

PROFILES_WITH_RULES = """
- apiVersion: projectcalico.org/v3
  kind: Profile
  metadata:
    name: database
  spec:
    labelsToApply:
      role: database
    ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports:
        -  3306
    - action: Allow
      source:
        selector: role == 'database'
    egress:
    - action: Allow
      destination:
        selector: role == 'database'
- apiVersion: projectcalico.org/v3
  kind: Profile
  metadata:
    name: frontend
  spec:
    labelsToApply:
      role: frontend
    egress:
    - action: Allow
      protocol: TCP
      destination:
        selector: role == 'database'
        ports:
        -  3306
"""

LABEL_PROFILES = """
- apiVersion: projectcalico.org/v3
  kind: Profile
  metadata:
    name: database
  spec:
    labelsToApply:
      role: database
- apiVersion: projectcalico.org/v3
  kind: Profile
  metadata:
    name: frontend
  spec:
    labelsToApply:
      role: frontend
- apiVersion: projectcalico.org/v3
  kind: Profile
  metadata:
    name: database-backup
  spec:
    labelsToApply:
      role: database
      backup: "true"
"""

POLICIES = """
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata:
    name: database
  spec:
    order: 0
    selector: role == 'database'
    ingress:
    - action: Allow
      protocol: TCP
      source:
        selector: role == 'frontend'
      destination:
        ports:
        -  3306
    - action: Allow
      source:
        selector: role == 'database'
    egress:
    - action: Allow
      destination:
        selector: role == 'database'
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata:
    name: frontend
  spec:
    order: 0
    selector: role == 'frontend'
    egress:
    - action: Allow
      protocol: TCP
      destination:
        selector: role == 'database'
        ports:
        -  3306
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkPolicy
  metadata:
    name: backupnetwork
  spec:
    selector: backup == 'true'
    ingress:
    - action: Allow
      source:
        selector: backup == 'true'
    egress:
    - action: Allow
      destination:
        selector: backup == 'true'
"""


def test_default_network_profile():
    [res] = load(DEFAULT_NETWORK_PROFILE)
    assert validate_resource(res) is res
    prof = profile_from_resource(res)
    assert prof.name == "net1"
    assert dict(prof.labels_to_apply) == {"net1": ""}
    assert prof.ingress == (Rule("Allow", source=EntityRule(selector=parse("has(net1)"))),)
    assert prof.egress == (Rule("Allow"),)
    assert prof.rules(INGRESS) == prof.ingress and prof.rules(EGRESS) == prof.egress
    assert selectors_of(prof) == {parse("has(net1)")}
    assert policy_warnings(res) == []


def test_profiles_with_rules():
    database, frontend = (profile_from_resource(r) for r in load(PROFILES_WITH_RULES))
    assert dict(database.labels_to_apply) == {"role": "database"}
    first = database.ingress[0]
    assert (first.action, first.protocol) == ("Allow", 6)
    assert first.source.selector == parse("role == 'frontend'")
    assert first.destination.ports == (PortRange(3306, 3306),)
    assert first.families() == (4, 6)
    assert frontend.ingress == ()
    assert frontend.egress[0].destination == EntityRule(
        selector=parse("role == 'database'"), ports=(PortRange(3306, 3306),))
    assert selectors_of(database) == {parse("role == 'frontend'"), parse("role == 'database'")}


def test_label_profiles_and_policies():
    for res in load(LABEL_PROFILES):
        assert profile_from_resource(res).ingress == ()
    backup = profile_from_resource(load(LABEL_PROFILES)[2])
    assert dict(backup.labels_to_apply) == {"role": "database", "backup": "true"}

    written = [validate_resource(r) for r in load(POLICIES)]
    assert [r.name for r in written] == ["default.database", "default.frontend",
                                         "default.backupnetwork"]
    assert [r.spec["types"] for r in written] == [["Ingress", "Egress"], ["Egress"],
                                                  ["Ingress", "Egress"]]
    database, frontend, backup = (policy_from_resource(r) for r in written)
    assert database.name == "default.database"
    assert database.order == 0.0 and database.selector == parse("role == 'database'")
    assert database.types == {INGRESS, EGRESS}
    assert frontend.types == {EGRESS}
    assert frontend.governs(EGRESS) and not frontend.governs(INGRESS)
    assert frontend.rules(EGRESS)[0].destination.ports == (PortRange(3306, 3306),)
    assert backup.order is None
    assert [p.name for p in sorted([backup, frontend, database], key=lambda p: p.sort_key)] \
        == ["default.database", "default.frontend", "default.backupnetwork"]
    assert selectors_of(backup) == {parse("backup == 'true'")}
    assert all(policy_warnings(r) == [] for r in written)


def test_tutorials_as_published_are_refused_with_hints():
    published = POLICIES.replace("Allow", "allow").replace("TCP", "tcp")
    message = refused(load(published)[0], "spec.ingress[0].action", "'allow'", "'Allow'")
    assert "case-sensitive" in message
    fixed_actions = POLICIES.replace("TCP", "tcp")
    refused(load(fixed_actions)[0], "spec.ingress[0].protocol", "'tcp'", "'TCP'")


def test_profile_metadata_labels_warn():
    res = profile({}, name="database", metadata={"labels": {"role": "database"}})
    profile_from_resource(res)  # legal, as calicoctl has it ...
    [warning] = policy_warnings(res)  # ... but not inherited
    assert "metadata.labels" in warning and "spec.labelsToApply" in warning


# ---------------------------------------------------------------------------
# types, names, ordering

@pytest.mark.parametrize("spec, types", [
    ({}, ["Ingress"]),
    ({"ingress": [{"action": "Allow"}]}, ["Ingress"]),
    ({"egress": [{"action": "Allow"}]}, ["Egress"]),
    ({"ingress": [{"action": "Deny"}], "egress": [{"action": "Allow"}]}, ["Ingress", "Egress"]),
])
def test_types_defaulted_on_write(spec, types):
    assert default_types(spec) == types
    res = gnp(spec)
    before = copy.deepcopy(res)
    written = validate_resource(res)
    assert written.spec["types"] == types and written.name == "default.db"
    assert res == before  # the caller's object is left alone
    assert policy_from_resource(written).types == frozenset(types)


def test_explicit_types_kept_on_write():
    written = validate_resource(gnp({"types": ["Egress"], "ingress": [{"action": "Allow"}]}))
    assert written.spec["types"] == ["Egress"]
    [warning] = policy_warnings(written)
    assert "spec.ingress has rules but spec.types lacks Ingress" in warning


def test_stored_empty_types_mean_both():
    stored = gnp({"ingress": [{"action": "Allow"}]}, name="default.raw")
    assert policy_from_resource(stored).types == {INGRESS, EGRESS}
    assert policy_from_resource(gnp({"types": []}, name="default.raw")).types \
        == {INGRESS, EGRESS}
    assert "spec.types is empty" in policy_warnings(stored)[0]


def test_storage_names():
    assert storage_name("db") == "default.db"
    assert storage_name("default.db") == "default.db"
    assert display_name("default.db") == "db"
    assert display_name("db") == "db"
    assert validate_resource(gnp({}, name="default.db")).name == "default.db"
    # Stored without the prefix (a raw writer): usable, named as stored.
    assert policy_from_resource(gnp({}, name="db")).name == "db"


def test_ordering():
    def pol(name, order):
        return GlobalNetworkPolicy(name=name, order=order, selector=parse(""),
                                   types=frozenset({INGRESS}))
    policies = [pol("default.z", None), pol("default.b", 10.0), pol("default.a", None),
                pol("default.c", 0.0), pol("default.b0", 0.0), pol("default.n", -5.5),
                pol("default.y", 1e6)]
    assert [p.name for p in sorted(policies, key=lambda p: p.sort_key)] == [
        "default.n", "default.b0", "default.c", "default.b", "default.y",
        "default.a", "default.z"]
    assert pol("default.x", None).sort_key == (True, 0.0, "default.x")


def test_order_and_selector_read():
    pol = policy_from_resource(gnp({"order": 100, "selector": "  "}))
    assert pol.order == 100.0 and isinstance(pol.order, float)
    assert pol.selector == parse("all()")
    assert policy_from_resource(gnp({"order": 2.5})).order == 2.5


@pytest.mark.parametrize("name, words", [
    ("DB", ["DNS-1123 label"]),
    ("db_1", ["DNS-1123 label"]),
    ("-db", ["DNS-1123 label"]),
    ("x" * 254, ["253"]),
    ("other.db", ["tier 'other'"]),
    ("default.Db", ["DNS-1123 label"]),
])
def test_policy_names_refused(name, words):
    refused(gnp({}, name=name), "metadata.name", *words)


@pytest.mark.parametrize("name", ["Net1", "my_net", "net1.", ""])
def test_profile_names_refused(name):
    refused(profile({}, name=name), "metadata.name")


def test_profile_dotted_name_accepted():
    assert profile_from_resource(profile({}, name="a.b-c")).name == "a.b-c"


def test_namespace_refused():
    refused(gnp({}, namespace="libnetwork"), "metadata.namespace", "not namespaced")


# ---------------------------------------------------------------------------
# GlobalNetworkPolicy spec refusals

@pytest.mark.parametrize("flag", ["doNotTrack", "preDNAT", "applyOnForward"])
def test_host_endpoint_flags(flag):
    refused(gnp({flag: "yes"}), f"spec.{flag}", "true or false")
    policy_from_resource(gnp({flag: False}))
    parsed = policy_from_resource(gnp({flag: True, "applyOnForward": True}))
    assert (parsed.do_not_track, parsed.pre_dnat, parsed.apply_on_forward) == (
        flag == "doNotTrack", flag == "preDNAT", True)


def test_host_endpoint_flags_as_calicoctl_checks_them():
    refused(gnp({"doNotTrack": True}), "spec.applyOnForward",
            "applyOnForward must be true if either preDNAT or doNotTrack is true")
    refused(gnp({"preDNAT": True, "doNotTrack": True, "applyOnForward": True}),
            "spec.preDNAT", "preDNAT and doNotTrack cannot both be true")
    pre_dnat = {"preDNAT": True, "applyOnForward": True}
    refused(gnp({**pre_dnat, "egress": [{"action": "Allow"}]}), "spec.egress",
            "preDNAT policy cannot have any egress rules")
    refused(gnp({**pre_dnat, "types": ["Ingress", "Egress"]}), "spec.types",
            "preDNAT policy cannot have 'Egress' type")
    assert validate_resource(gnp({**pre_dnat, "ingress": [{"action": "Deny"}]})) \
        .spec["types"] == ["Ingress"]


def test_service_account_and_namespace_selectors():
    refused(gnp({"serviceAccountSelector": "role == 'x'"}), "spec.serviceAccountSelector",
            "not supported")
    refused(gnp({"namespaceSelector": "all()"}), "spec.namespaceSelector", "not supported")
    policy_from_resource(gnp({"serviceAccountSelector": "", "namespaceSelector": ""}))


def test_tier():
    policy_from_resource(gnp({"tier": "default"}))
    policy_from_resource(gnp({"tier": ""}))
    refused(gnp({"tier": "security"}), "spec.tier", "'security'", "default")


def test_performance_hints_accepted_and_checked():
    pol = policy_from_resource(gnp({"performanceHints": ["AssumeNeededOnEveryNode"]}))
    assert pol == policy_from_resource(gnp({}))
    refused(gnp({"performanceHints": ["Fast"]}), "spec.performanceHints[0]", "'Fast'")
    refused(gnp({"performanceHints": ["AssumeNeededOnEveryNode"] * 2}),
            "spec.performanceHints[1]", "twice")


def test_types_refused():
    refused(gnp({"types": ["ingress"]}), "spec.types[0]", "'ingress'", "'Ingress'")
    refused(gnp({"types": ["Both"]}), "spec.types[0]", "Ingress or Egress")
    refused(gnp({"types": ["Egress", "Egress"]}), "spec.types[1]", "twice")
    refused(gnp({"types": "Ingress"}), "spec.types", "list")


def test_order_refused():
    refused(gnp({"order": "10"}), "spec.order", "number")
    refused(gnp({"order": True}), "spec.order", "number")
    refused(gnp({"order": float("nan")}), "spec.order", "number")


def test_policy_selector_refused():
    refused(gnp({"selector": "global()"}), "spec.selector", "global()")
    refused(gnp({"selector": "role == "}), "spec.selector")
    refused(gnp({"selector": 7}), "spec.selector", "selector string")


def test_unknown_spec_fields():
    refused(gnp({"egres": []}), "spec.egres", "unknown field")
    refused(gnp({"Order": 1}), "spec.Order", "did you mean 'order'")
    refused(profile({"selector": "all()"}), "spec.selector", "unknown field")
    refused(profile({"labels": {"a": "b"}}), "spec.labels", "unknown field")
    refused(gnp([]), "spec", "mapping")


# ---------------------------------------------------------------------------
# labelsToApply

@pytest.mark.parametrize("key", ["-a", "a b", "x" * 64, "Example.com/a", "a/b/c", "/a", ""])
def test_label_keys_refused(key):
    refused(profile({"labelsToApply": {key: "v"}}), f"spec.labelsToApply.{key}")


@pytest.mark.parametrize("value", ["-a", "a b", "x" * 64, "a/b"])
def test_label_values_refused(value):
    refused(profile({"labelsToApply": {"k": value}}), "spec.labelsToApply.k", "label value")


def test_label_value_must_be_string():
    refused(profile({"labelsToApply": {"backup": True}}), "spec.labelsToApply.backup",
            "string", "quote")


def test_labels_accepted():
    labels = {"role": "db", "example.com/tier": "a_b.c-d", "A": "", "x" * 63: "y" * 63}
    assert dict(profile_from_resource(profile({"labelsToApply": labels})).labels_to_apply) \
        == labels


# ---------------------------------------------------------------------------
# Rule refusals

def test_action():
    refused_rule({"action": "allow"}, "action", "'allow'", "write 'Allow'")
    refused_rule({"action": "deny"}, "action", "write 'Deny'")
    refused_rule({"action": "Accept"}, "action", "Allow, Deny, Log or Pass")
    refused_rule({}, "action", "required")
    assert [rule_of({"action": a}).action for a in ("Allow", "Deny", "Log", "Pass")] \
        == ["Allow", "Deny", "Log", "Pass"]


def test_ip_version():
    assert rule_of({"action": "Allow", "ipVersion": 6}).ip_version == 6
    refused_rule({"action": "Allow", "ipVersion": 5}, "ipVersion", "4 or 6")
    refused_rule({"action": "Allow", "ipVersion": "4"}, "ipVersion", "4 or 6")


@pytest.mark.parametrize("written, number", [
    ("TCP", 6), ("UDP", 17), ("ICMP", 1), ("ICMPv6", 58), ("SCTP", 132), ("UDPLite", 136),
    (6, 6), ("6", 6), (255, 255), ("47", 47), (1, 1),
])
def test_protocols(written, number):
    r = rule_of({"action": "Allow", "protocol": written, "notProtocol": written})
    assert (r.protocol, r.not_protocol) == (number, number)


@pytest.mark.parametrize("field", ["protocol", "notProtocol"])
def test_protocols_refused(field):
    refused_rule({"action": "Allow", field: "tcp"}, field, "'tcp'", "write 'TCP'")
    refused_rule({"action": "Allow", field: "icmpv6"}, field, "write 'ICMPv6'")
    refused_rule({"action": "Allow", field: "GRE"}, field, "TCP, UDP")
    refused_rule({"action": "Allow", field: 0}, field, "1-255")
    refused_rule({"action": "Allow", field: "256"}, field, "1-255")
    refused_rule({"action": "Allow", field: True}, field, "protocol name or number")


def test_icmp():
    r = rule_of({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}})
    assert r.icmp == IcmpMatch(8, 0) and r.not_icmp is None
    r = rule_of({"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128}})
    assert r.icmp == IcmpMatch(128, None)
    # An empty match constrains nothing.
    assert rule_of({"action": "Allow", "protocol": "ICMP", "icmp": {}}).icmp is None


def test_not_icmp():
    r = rule_of({"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 8, "code": 0}})
    assert r.not_icmp == IcmpMatch(8, 0) and r.icmp is None
    r = rule_of({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 3},
                 "notICMP": {"type": 3, "code": 4}})
    assert (r.icmp, r.not_icmp) == (IcmpMatch(3), IcmpMatch(3, 4))
    refused_rule({"action": "Allow", "notICMP": {"type": 8}}, "notICMP",
                 "needs protocol ICMP or ICMPv6")


@pytest.mark.parametrize("field", ["icmp", "notICMP"])
def test_icmp_refused(field):
    base = {"action": "Allow", "protocol": "ICMP"}
    refused_rule({"action": "Allow", field: {"type": 8}}, field, "no protocol")
    refused_rule({"action": "Allow", "protocol": "TCP", field: {"type": 8}}, field,
                 "ICMP or ICMPv6")
    # calicoctl compares names: protocol 1 with icmp is refused.
    refused_rule({"action": "Allow", "protocol": 1, field: {"type": 8}}, field, "by name")
    refused_rule({**base, field: {"type": 255}}, f"{field}.type", "0-254")
    refused_rule({**base, field: {"type": -1}}, f"{field}.type", "0-254")
    refused_rule({**base, field: {"type": 3, "code": 256}}, f"{field}.code", "0-255")
    refused_rule({**base, field: {"code": 0}}, f"{field}.code", "needs an ICMP type")
    refused_rule({**base, field: {"type": "8"}}, f"{field}.type", "0-254")
    refused_rule({**base, field: {"type": 8, "kind": 1}}, f"{field}.kind", "unknown field")


def test_icmp_ip_version():
    rule_of({"action": "Allow", "protocol": "ICMP", "ipVersion": 4})
    rule_of({"action": "Allow", "protocol": "ICMPv6", "ipVersion": 6})
    refused_rule({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}, "ipVersion",
                 "needs ipVersion 4")
    refused_rule({"action": "Allow", "protocol": "ICMPv6", "ipVersion": 4}, "ipVersion",
                 "needs ipVersion 6")
    refused_rule({"action": "Allow", "notProtocol": "ICMP", "ipVersion": 6}, "ipVersion",
                 "needs ipVersion 4")
    refused_rule({"action": "Allow", "notProtocol": "ICMPv6", "ipVersion": 4}, "ipVersion",
                 "needs ipVersion 6")


def test_http_refused():
    refused_rule({"action": "Allow", "protocol": "TCP", "http": {"methods": ["GET"]}}, "http",
                 "not enforced")


def test_unknown_rule_fields():
    refused_rule({"action": "Allow", "ipversion": 4}, "ipversion", "did you mean 'ipVersion'")
    refused_rule({"action": "Allow", "notIcmp": {}}, "notIcmp", "did you mean 'notICMP'")
    refused_rule({"action": "Allow", "comment": "x"}, "comment", "unknown field")
    refused(gnp({"ingress": ["Allow"]}), "spec.ingress[0]", "mapping")
    refused(gnp({"egress": {"action": "Allow"}}), "spec.egress", "list")


def test_rule_metadata():
    r = rule_of({"action": "Allow", "metadata": {"annotations": {"owner": "ops",
                                                                 "example.com/why": "x y"}}})
    assert r == Rule("Allow")
    refused_rule({"action": "Allow", "metadata": {"labels": {}}}, "metadata.labels",
                 "unknown field")
    refused_rule({"action": "Allow", "metadata": {"annotations": {"a b": "x"}}},
                 "metadata.annotations.a b")
    refused_rule({"action": "Allow", "metadata": {"annotations": {"n": 1}}},
                 "metadata.annotations.n", "string")
    refused_rule({"action": "Allow", "metadata": {"annotations": {"big": "x" * 262144}}},
                 "metadata.annotations", "256 KiB")


# ---------------------------------------------------------------------------
# EntityRule

def test_entity_rule_fields():
    r = rule_of({"action": "Allow", "protocol": "UDP",
                 "source": {"nets": ["10.0.0.0/8", "192.168.1.7"], "notNets": ["10.1.0.0/16"],
                            "selector": "role == 'a'", "notSelector": "has(b)",
                            "notPorts": [53]},
                 "destination": {"ports": [80, "443", "8000:8080", "9000:9000"],
                                 "notPorts": ["8080"], "selector": "",
                                 "namespaceSelector": ""}})
    assert r.source == EntityRule(
        nets=(IPNetwork("10.0.0.0/8"), IPNetwork("192.168.1.7/32")),
        not_nets=(IPNetwork("10.1.0.0/16"),), selector=parse("role == 'a'"),
        not_selector=parse("has(b)"), not_ports=(PortRange(53, 53),))
    assert r.destination == EntityRule(
        ports=(PortRange(80, 80), PortRange(443, 443), PortRange(8000, 8080),
               PortRange(9000, 9000)), not_ports=(PortRange(8080, 8080),))
    assert rule_selectors(r) == {parse("role == 'a'"), parse("has(b)")}


def test_bare_ipv6_is_128():
    r = rule_of({"action": "Allow", "destination": {"nets": ["fd00::1", "fd00:1::/64"]}})
    assert r.destination.nets == (IPNetwork("fd00::1/128"), IPNetwork("fd00:1::/64"))


@pytest.mark.parametrize("net, words", [
    ("10.0.0.1/24", ["strictly masked", "10.0.0.0/24"]),
    ("fd00::1/64", ["strictly masked", "fd00::/64"]),
    ("10.0.0.0/33", ["not a CIDR"]),
    ("10.0.0.0/255.0.0.0", ["not a CIDR"]),
    ("host.example", ["not a CIDR"]),
    ("fe80::1%eth0", ["not a CIDR"]),
    ("", ["not a CIDR"]),
])
def test_nets_refused(net, words):
    refused_rule({"action": "Allow", "source": {"notNets": [net]}}, "source.notNets[0]", *words)


def test_net_must_be_string():
    refused_rule({"action": "Allow", "source": {"nets": [10]}}, "source.nets[0]", "CIDR string")


def test_nets_and_ip_version():
    refused_rule({"action": "Allow", "ipVersion": 6, "destination": {"nets": ["10.0.0.0/8"]}},
                 "destination.nets", "IPv4", "ipVersion 6")
    refused_rule({"action": "Allow", "ipVersion": 4, "source": {"notNets": ["fd00::/8"]}},
                 "source.notNets", "IPv6", "ipVersion 4")
    refused_rule({"action": "Allow", "source": {"nets": ["10.0.0.0/8"]},
                  "destination": {"notNets": ["fd00::/8"]}}, "destination.notNets", "mix")
    refused_rule({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "fd00::/8"]}},
                 "source.nets", "mix")


def test_entity_rule_kubernetes_fields_refused():
    refused_rule({"action": "Allow", "source": {"namespaceSelector": "global()"}},
                 "source.namespaceSelector", "not supported")
    refused_rule({"action": "Allow", "source": {"serviceAccounts": {"names": ["a"]}}},
                 "source.serviceAccounts", "not supported")
    refused_rule({"action": "Allow", "destination": {"services": {"name": "web"}}},
                 "destination.services", "not supported")
    refused_rule({"action": "Allow", "destination": {"port": [80]}}, "destination.port",
                 "unknown field")


def test_entity_rule_selectors_refused():
    refused_rule({"action": "Allow", "source": {"selector": "global() && has(a)"}},
                 "source.selector", "global()")
    refused_rule({"action": "Allow", "destination": {"notSelector": "a = 'b'"}},
                 "destination.notSelector")


def test_named_ports_refused():
    message = refused(
        gnp({"ingress": [{"action": "Allow", "protocol": "TCP",
                          "destination": {"ports": [80, "http"]}}]}),
        "spec.ingress[0].destination.ports[1]")
    assert message == ("GlobalNetworkPolicy db: spec.ingress[0].destination.ports[1]: 'http' "
                       "is a named port; only numbers and ranges such as 8000:8080 are "
                       "supported")
    refused_rule({"action": "Allow", "protocol": "UDP", "source": {"notPorts": ["dns_udp"]}},
                 "source.notPorts[0]", "named port")


@pytest.mark.parametrize("port, words", [
    (0, ["out of range"]), (65536, ["out of range"]), ("0:80", ["out of range"]),
    ("80:70000", ["out of range"]), ("90:80", ["reversed", "80:90"]),
    ("80-90", ["not a port", "8000:8080"]), ("", ["not a port"]), (True, ["not a port"]),
    (80.5, ["not a port"]),
])
def test_ports_refused(port, words):
    refused_rule({"action": "Allow", "protocol": "TCP", "destination": {"ports": [port]}},
                 "destination.ports[0]", *words)


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP", 6, 17, 132, "6", "17", "132"])
def test_ports_with_port_protocols(protocol):
    r = rule_of({"action": "Allow", "protocol": protocol, "source": {"ports": ["1:1024"]}})
    assert r.source.ports == (PortRange(1, 1024),)


@pytest.mark.parametrize("side, key", [("source", "ports"), ("source", "notPorts"),
                                       ("destination", "ports"), ("destination", "notPorts")])
def test_ports_need_protocol(side, key):
    refused_rule({"action": "Allow", side: {key: [80]}}, f"{side}.{key}", "no protocol")
    refused_rule({"action": "Allow", "protocol": "ICMP", side: {key: [80]}}, f"{side}.{key}",
                 "TCP, UDP or SCTP", "protocol ICMP")
    refused_rule({"action": "Allow", "protocol": "UDPLite", side: {key: [80]}},
                 f"{side}.{key}", "protocol UDPLite")
    refused_rule({"action": "Allow", "notProtocol": "TCP", side: {key: [80]}},
                 f"{side}.{key}", "no protocol")


# ---------------------------------------------------------------------------
# families

@pytest.mark.parametrize("rule, families", [
    ({}, (4, 6)),
    ({"ipVersion": 4}, (4,)),
    ({"ipVersion": 6}, (6,)),
    ({"protocol": "ICMP"}, (4,)),
    ({"protocol": "ICMPv6"}, (6,)),
    ({"protocol": "58"}, (6,)),
    ({"protocol": 1, "ipVersion": 6}, ()),  # calicoctl checks names only; renders nowhere
    ({"notProtocol": "ICMP"}, (4, 6)),
    ({"source": {"nets": ["10.0.0.0/8"]}}, (4,)),
    ({"destination": {"notNets": ["fd00::/8"]}}, (6,)),
    ({"protocol": "TCP", "destination": {"ports": [80], "selector": "has(a)"}}, (4, 6)),
])
def test_families(rule, families):
    assert rule_of({"action": "Allow", **rule}).families() == families


def test_families_of_mixed_rules_built_directly():
    v4, v6 = IPNetwork("10.0.0.0/8"), IPNetwork("fd00::/8")
    mixed = Rule("Allow", source=EntityRule(nets=(v4, v6)), destination=EntityRule(nets=(v6,)))
    assert mixed.families() == (6,)
    assert mixed.nets_for(6) == ((v6,), (), (v6,), ())
    assert mixed.nets_for(4) == ((v4,), (), (), ())
    assert mixed.for_family(4) is None
    assert mixed.for_family(6) == Rule("Allow", source=EntityRule(nets=(v6,)),
                                       destination=EntityRule(nets=(v6,)))
    split = Rule("Allow", source=EntityRule(nets=(v4,)), destination=EntityRule(not_nets=(v6,)))
    assert split.families() == ()
    assert Rule("Deny", ip_version=4, source=EntityRule(not_nets=(v6,))).families() == ()


def test_for_family_keeps_the_rest():
    r = rule_of({"action": "Deny", "protocol": "TCP",
                 "source": {"nets": ["10.0.0.0/8"], "selector": "has(a)"},
                 "destination": {"ports": [22]}})
    assert r.for_family(4) == r
    assert r.for_family(6) is None


# ---------------------------------------------------------------------------
# selectors_of, validate_resource on other kinds

def test_selectors_of_policy():
    pol = policy_from_resource(gnp({
        "selector": "role == 'db'",
        "ingress": [{"action": "Allow", "source": {"selector": "a == 'x'",
                                                   "notSelector": "has(b)"}},
                    {"action": "Deny", "source": {"selector": "a == 'x'"}}],
        "egress": [{"action": "Allow", "destination": {"notSelector": "c != 'y'"}}]}))
    assert selectors_of(pol) == {parse("a == 'x'"), parse("has(b)"), parse("c != 'y'")}
    assert selectors_of(policy_from_resource(gnp({"selector": "has(z)"}))) == set()


def test_validate_resource_kinds():
    pool = Resource(kind="IPPool", name="p", spec={"cidr": "10.0.0.0/16"})
    assert validate_resource(pool) is pool
    for kind in ("NetworkPolicy", "GlobalNetworkSet", "Tier"):
        with pytest.raises(PolicyError, match=f"^{kind} x: kind: not supported"):
            validate_resource(Resource(kind=kind, name="x", spec={}))
    with pytest.raises(PolicyError, match="^Profile Bad: metadata.name"):
        validate_resource(profile({}, name="Bad"))
    with pytest.raises(PolicyError, match=r"^GlobalNetworkPolicy db: spec.ingress\[0\].action"):
        validate_resource(gnp({"ingress": [{"action": "allow"}]}))


def test_wrong_kind_for_reader():
    with pytest.raises(PolicyError, match="kind: expected Profile"):
        profile_from_resource(gnp({}))
    with pytest.raises(PolicyError, match="kind: expected GlobalNetworkPolicy"):
        policy_from_resource(profile({}))


def test_model_values_are_hashable_and_comparable():
    pol = policy_from_resource(load(POLICIES)[0])
    assert hash(pol) == hash(policy_from_resource(load(POLICIES)[0]))
    assert profile_from_resource(load(PROFILES_WITH_RULES)[0]) \
        == profile_from_resource(load(PROFILES_WITH_RULES)[0])


@pytest.mark.parametrize("network", ["net1", "My_Net", "a.b", "x" * 80])
def test_the_plugins_own_network_profiles_are_valid(network):
    from driver.endpoints import network_profile, profile_name
    name = profile_name(network)
    prof = profile_from_resource(validate_resource(network_profile(name)))
    assert dict(prof.labels_to_apply) == {name: ""}
    assert selectors_of(prof) == {parse(f"has({name})")}
