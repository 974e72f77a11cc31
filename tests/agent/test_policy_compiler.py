"""The policy compiler and the nftables scripts, without etcd: records as
etcd holds them are fed to PolicyState (or a PolicyEngine whose nft runs
nothing), and the chains are read as Felix would run them
(calico-policy.md §3.6, §4, §5, §6).  Every script the renderer writes is
checked by the real nft (`nft -c`, which the kernel validates and aborts)
in a throw-away network namespace; the host's ruleset is never touched."""

import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess

import pytest

from agent.policy import nft
from agent.policy.compiler import (ACCEPT_MARK, ACCEPTED, CLEAR_MARKS, IPIP_PROTOCOL,
                                   NOT_ACCEPTED, NOT_PASSED, VXLAN_PORT,
                                   Chains, chain_name, render_rule, set_name)
from agent.policy.engine import PolicyEngine
from agent.policy.nft import FAMILY, TABLE, Ruleset, diff_script, full_script
from datastore.policy import INVALID_PROFILE as INVALID
from datastore.policy import policy_from_resource
from datastore.records import PROFILES
from datastore.resources import Resource
from datastore.selector import parse
from tests.agent.policy_records import (NODE, OTHER_NODE, calico_node, felix_configuration,
                                        gnp, gone, hep, interface, ip_pool, profile, state_of,
                                        wep)
from tests.introspect import compile_chains, rule_selectors
from tests.lab import Lab
from tests.introspect import feed

T = f"{FAMILY} {TABLE}"
V4, V6 = "meta nfproto ipv4", "meta nfproto ipv6"
ALLOW = "meta mark set meta mark | 0x10000 return"


def endpoint_chains(state, name="a"):
    """The compiled chains and endpoint `name`'s (ingress, egress) chain."""
    chains = compile_chains(state, NODE)
    return chains, chains.rules[chains.ingress[interface(name)]], \
        chains.rules[chains.egress[interface(name)]]


def skeleton(lines) -> list[str]:
    """An endpoint chain in words: "policy <chain>" (a jump guarded by the
    pass bit, then return on the accept bit), "end of tier",
    "profile <chain>" (an unguarded jump, then return on the accept bit),
    "no vxlan", "no ipip" and "drop"."""
    lines = iter(lines)
    assert next(lines) == CLEAR_MARKS
    words = []
    for line in lines:
        jump = re.fullmatch(rf"({re.escape(NOT_PASSED)} )?jump (\S+)", line)
        if jump:
            words.append(("policy " if jump[1] else "profile ") + jump[2])
            assert next(lines) == f"{ACCEPTED} return"
        else:
            words.append({f"{NOT_PASSED} drop": "end of tier", "drop": "drop",
                          f"udp dport {VXLAN_PORT} drop": "no vxlan",
                          f"meta l4proto {IPIP_PROTOCOL} drop": "no ipip"}[line])
    return words


# ---------------------------------------------------------------------------
# Felix's evaluation order, as compiled

def test_endpoint_chains_have_felixs_shape():
    _, ingress, egress = endpoint_chains(state_of(
        profile("net1"), wep("a"), gnp("p", selector="all()", ingress=[{"action": "Allow"}],
                                       egress=[{"action": "Allow"}])))
    assert ingress == ("meta mark set meta mark & 0xfffcffff",
                       "meta mark & 0x20000 == 0 jump pi-default.p",
                       "meta mark & 0x10000 == 0x10000 return",
                       "meta mark & 0x20000 == 0 drop",
                       "jump pri-net1",
                       "meta mark & 0x10000 == 0x10000 return",
                       "drop")
    assert egress == (ingress[0], "udp dport 4789 drop", "meta l4proto 4 drop",
                      *(line.replace("pi-", "po-").replace("pri-", "pro-") for line in ingress[1:]))


def test_policies_run_by_order_then_name_with_no_order_last():
    orders = {"b": 1, "a": 1, "c": None, "d": 0.5, "e": -2, "aa": None, "z": 10, "y": 2.5}
    _, ingress, _ = endpoint_chains(state_of(profile("net1"), wep("a"), *(
        gnp(name, order=order, types=["Ingress"]) for name, order in orders.items())))
    assert skeleton(ingress) == [f"policy pi-default.{n}" for n in "e d a b y z aa c".split()] \
        + ["end of tier", "profile pri-net1", "drop"]


@pytest.mark.parametrize("types, ingress_policy, egress_policy", [
    (["Ingress"], True, False),
    (["Egress"], False, True),
    (["Ingress", "Egress"], True, True),
    ([], True, True),  # empty types: both, as in Felix (§1.8)
])
def test_a_policy_governs_only_its_directions(types, ingress_policy, egress_policy):
    chains, ingress, egress = endpoint_chains(state_of(
        profile("net1"), wep("a"),
        gnp("p", selector="all()", types=types, ingress=[{"action": "Allow"}],
            egress=[{"action": "Allow"}])))
    profiles_only = ["profile pri-net1", "drop"]
    assert skeleton(ingress) == (["policy pi-default.p", "end of tier"] if ingress_policy
                                 else []) + profiles_only
    assert skeleton(egress) == ["no vxlan", "no ipip"] + (["policy po-default.p", "end of tier"]
                                               if egress_policy else []) \
        + [w.replace("pri-", "pro-") for w in profiles_only]
    assert ("pi-default.p" in chains.rules) == ingress_policy
    assert ("po-default.p" in chains.rules) == egress_policy


def test_a_policy_that_selects_nothing_leaves_profiles_alone():
    _, ingress, egress = endpoint_chains(state_of(
        profile("net1"), wep("a"), gnp("p", selector="has(other)", ingress=[{"action": "Deny"}])))
    assert skeleton(ingress) == ["profile pri-net1", "drop"]
    assert skeleton(egress) == ["no vxlan", "no ipip", "profile pro-net1", "drop"]


@pytest.mark.parametrize("gone_profile", [
    None,  # missing: never written
    profile("gone", ingress=[{"action": "allow"}]),  # invalid: actions are case-sensitive
    profile("gone", egress=[{"action": "Allow", "http": {"methods": ["GET"]}}]),  # unsupported
    (PROFILES.prefix + "gone", b"{not json"),  # unreadable
], ids=["missing", "invalid", "unsupported", "unreadable"])
def test_a_missing_or_invalid_profile_drops_and_ends_the_chain(gone_profile):
    state = state_of(profile("net1"), profile("net2"), *([gone_profile] if gone_profile else ()),
                     wep("a", profiles=("net1", "gone", "net2")),
                     gnp("p", types=["Ingress"], ingress=[{"action": "Pass"}]))
    assert state.profiles.get("gone", INVALID) is INVALID
    chains, ingress, egress = endpoint_chains(state)
    assert skeleton(ingress) == ["policy pi-default.p", "end of tier", "profile pri-net1", "drop"]
    assert skeleton(egress) == ["no vxlan", "no ipip", "profile pro-net1", "drop"]
    assert not {"pri-net2", "pro-net2", "pri-gone", "pro-gone"} & set(chains.rules)


def test_an_endpoint_without_profiles_ends_in_a_drop():
    _, ingress, egress = endpoint_chains(state_of(wep("a", profiles=())))
    assert skeleton(ingress) == ["drop"]
    assert skeleton(egress) == ["no vxlan", "no ipip", "drop"]


HOST_PRELUDE = ("icmpv6 type { 130, 131, 132, 133, 135, 136 } accept",
                "ct state established,related accept", "ct state invalid drop")


def test_host_endpoints_get_felixs_chains_of_each_kind():
    """Normal chains always (failsafe, policies, profiles, drop; nothing but
    failsafe without them); forward chains always (allowed without
    applyOnForward policies); preDNAT and untracked chains only for such
    policies, untracked not for "*"; the first endpoint by name wins an
    interface; another node's endpoints get none."""
    lan = {"role": "lan"}
    chains = compile_chains(state_of(
        profile("open", ingress=[{"action": "Allow"}]),
        hep("a-eth0", "eth0", labels=lan, profiles=("open",)), hep("b-eth0", "eth0"),
        hep("all", "*", labels=lan), hep("h2", "eth1", node=OTHER_NODE, labels=lan),
        gnp("normal", selector="has(role)", types=["Ingress"], ingress=[{"action": "Pass"}]),
        gnp("untracked", selector="has(role)", doNotTrack=True, applyOnForward=True,
            types=["Ingress"], ingress=[{"action": "Allow"}])), NODE)
    assert {d: sorted(c.items()) for d, c in chains.host.items()} == {
        "from-hep": [("*", "fh-any-interface-at-all"), ("eth0", "fh-eth0")],
        "to-hep": [("*", "th-any-interface-at-all"), ("eth0", "th-eth0")],
        "from-hep-fwd": [("*", "fhfw-any-interface-at-all"), ("eth0", "fhfw-eth0")],
        "to-hep-fwd": [("*", "thfw-any-interface-at-all"), ("eth0", "thfw-eth0")],
        "raw-from-hep": [("eth0", "raw-fh-eth0")], "raw-to-hep": [("eth0", "raw-th-eth0")]}
    assert chains.rules["fh-eth0"] == (*HOST_PRELUDE, "jump failsafe-in", CLEAR_MARKS,
                                       f"{NOT_PASSED} jump pi-default.normal",
                                       f"{ACCEPTED} return", f"{NOT_PASSED} drop",
                                       "jump pri-open", f"{ACCEPTED} return", "drop")
    assert chains.rules["th-eth0"] == (*HOST_PRELUDE, "jump failsafe-out", CLEAR_MARKS,
                                       "jump pro-open", f"{ACCEPTED} return", "drop")
    assert chains.rules["th-any-interface-at-all"] == (*HOST_PRELUDE, "jump failsafe-out",
                                                       CLEAR_MARKS, "drop")
    assert chains.rules["fhfw-eth0"] == (*HOST_PRELUDE[1:], CLEAR_MARKS, ALLOW)
    assert chains.rules["raw-fh-eth0"] == (
        "jump raw-failsafe-in", CLEAR_MARKS, f"{NOT_PASSED} jump pi-default.untracked",
        f"{ACCEPTED} notrack", f"{ACCEPTED} return")
    assert chains.rules["raw-th-eth0"] == ("jump raw-failsafe-out", CLEAR_MARKS)


def test_a_host_endpoint_without_interface_name_takes_the_interfaces_of_its_addresses():
    """As Felix: each interface holding one of its expectedIPs, unless an
    endpoint first by name claims it; none while no interface holds them."""
    state = state_of(hep("b-by-address", "", "10.0.0.11", "fd00::12"),
                     hep("a-eth1", "eth1"), hep("c-eth2", "eth2"))
    addresses = {"eth0": frozenset({"10.0.0.11"}), "eth1": frozenset({"fd00::12"}),
                 "eth2": frozenset({"fd00::12"}), "eth3": frozenset({"10.0.0.99"})}
    assert [(e.key.rsplit("/", 1)[1], e.interface)
            for e in state.local_host_endpoints(NODE, addresses)] == [
        ("b-by-address", "eth0"), ("a-eth1", "eth1"), ("b-by-address", "eth2")]
    assert sorted(compile_chains(state, NODE, addresses).host["from-hep"]) == [
        "eth0", "eth1", "eth2"]
    assert sorted(compile_chains(state, NODE).host["from-hep"]) == ["eth1", "eth2"]


def test_only_local_endpoints_with_an_interface_get_chains():
    no_interface = wep("x")
    record = json.loads(no_interface[1])
    del record["spec"]["interfaceName"]
    chains = compile_chains(state_of(profile("net1"), wep("a"), wep("r", node=OTHER_NODE),
                                     (no_interface[0], json.dumps(record).encode())), NODE)
    assert list(chains.ingress) == list(chains.egress) == [interface("a")]
    assert chains.ingress[interface("a")].startswith("tw-")
    assert chains.egress[interface("a")].startswith("fw-")
    assert {chains.ingress[interface("a")], chains.egress[interface("a")]} <= set(chains.rules)


def test_workloads_selected_alike_share_their_chains():
    """Same policies in the same order, same profiles, same published
    ports: one tw-/fw- pair, rendered once; any difference, a pair of its own."""
    state = state_of(profile("net1"), profile("net2"),
                     wep("a"), wep("b"), wep("c", profiles=("net2",)),
                     wep("d", labels={"app": "web"}), wep("e", labels={"app": "web"}),
                     wep("f"),
                     gnp("web", selector="app == 'web'", types=["Ingress"],
                         ingress=[{"action": "Allow"}]))
    f = wep("f")[0]
    state.endpoints[f] = dataclasses.replace(state.endpoints[f], publishes=True)
    chains = compile_chains(state, NODE)
    ingress = {name: chains.ingress[interface(name)] for name in "abcdef"}
    assert ingress["a"] == ingress["b"]
    assert ingress["d"] == ingress["e"]
    assert len({ingress[n] for n in "acdf"}) == 4
    assert chains.egress[interface("d")] == chains.egress[interface("a")]  # Ingress only
    assert skeleton(chains.rules[ingress["d"]]) == [
        "policy pi-default.web", "end of tier", "profile pri-net1", "drop"]
    assert len([n for n in chains.rules if n.startswith(("tw-", "fw-"))]) == 4 + 3


# The record of one policy or profile whose chain ends as the outcome says:
# None and Log set no mark, Allow accepts, Deny drops, Pass passes.  Rules
# after the first verdict check that evaluation stops there; Log first
# checks that it does not.
OUTCOME_RULES = {None: [], "Log": [{"action": "Log"}],
                 "Allow": [{"action": "Log"}, {"action": "Allow"}],
                 "Deny": [{"action": "Deny"}, {"action": "Allow"}],
                 "Pass": [{"action": "Pass"}, {"action": "Deny"}]}
_PHRASE = re.compile(r"meta nfproto (?P<nfproto>ipv4|ipv6)|udp dport (?P<udp>\d+)"
                     r"|meta l4proto (?P<l4proto>\d+)"
                     r"|meta mark & (?P<mask>0x[0-9a-f]+) == (?P<want>0x[0-9a-f]+|0)"
                     r"|meta mark set meta mark (?P<op>[&|]) (?P<bits>0x[0-9a-f]+)"
                     r"|log prefix \"[^\"]*\" level \w+"
                     r"|jump (?P<jump>\S+)|(?P<verdict>return|drop)| ")


def run_chain(rules: dict, name: str, packet: dict) -> str:
    """Run chain `name` for a packet of one family that is neither VXLAN nor IPIP (the
    chains run here match nothing else): "drop", or "return" with
    packet["mark"] as the chain left it."""
    for line in rules[name]:
        pos = 0
        while pos < len(line):
            m = _PHRASE.match(line, pos)
            assert m, f"cannot run {line[pos:]!r}"
            pos = m.end()
            if m["nfproto"] and m["nfproto"] != packet["nfproto"] or m["udp"] or m["l4proto"] \
                    or m["mask"] and packet["mark"] & int(m["mask"], 16) != int(m["want"], 16):
                break  # the rule does not match
            if m["op"]:
                bits = int(m["bits"], 16)
                packet["mark"] = packet["mark"] | bits if m["op"] == "|" \
                    else packet["mark"] & bits
            elif m["jump"] and run_chain(rules, m["jump"], packet) == "drop" \
                    or m["verdict"]:
                return m["verdict"] or "drop"
    return "return"


def felix(policies: list, profiles: list) -> str:
    """calico-policy.md §4.3 (v3.27: one tier, Pass goes to the profiles)."""
    for outcome in policies:
        if outcome in ("Allow", "Deny", "Pass"):
            break
    else:
        outcome = "Deny" if policies else None
    if outcome in ("Allow", "Deny"):
        return outcome
    return next((o for o in profiles if o in ("Allow", "Deny")), "Deny")


def test_every_combination_of_policy_and_profile_outcomes_ends_as_in_felix():
    runs = 0
    for n_policies, n_profiles in itertools.product(range(3), repeat=2):
        for outcomes in itertools.product(OUTCOME_RULES, repeat=n_policies + n_profiles):
            policies, profiles = outcomes[:n_policies], outcomes[n_policies:]
            # Names sort against order, so only order can put them right.
            state = state_of(
                *(gnp(f"p{9 - i}", order=i, ingress=OUTCOME_RULES[o], egress=OUTCOME_RULES[o],
                      types=["Ingress", "Egress"]) for i, o in enumerate(policies)),
                *(profile(f"r{i}", ingress=OUTCOME_RULES[o], egress=OUTCOME_RULES[o], labels={})
                  for i, o in enumerate(profiles)),
                wep("a", profiles=[f"r{i}" for i in range(n_profiles)]))
            chains = compile_chains(state, NODE)
            expected = felix(policies, profiles)
            for endpoint_chain, nfproto in itertools.product(
                    (chains.ingress[interface("a")], chains.egress[interface("a")]),
                    ("ipv4", "ipv6")):
                # Marks left by whatever ran before must not count.
                packet = {"nfproto": nfproto, "mark": 0x30001}
                verdict = run_chain(chains.rules, endpoint_chain, packet)
                got = "Deny" if verdict == "drop" else \
                    "Allow" if packet["mark"] & ACCEPT_MARK else "returned unmarked"
                assert got == expected, (endpoint_chain, nfproto, policies, profiles)
                runs += 1
    assert runs == 4 * 31 * 31


# ---------------------------------------------------------------------------
# Labels (§3.6)

LABELLED = (profile("p1", labels={"role": "web", "tier": "back"}),
            profile("p2", labels={"tier": "front", "zone": "z1", "pcns.team": "inherited"}),
            wep("a", profiles=("p1", "p2", "p3"),
                labels={"role": "db", "pcns.team": "own", "pcsa.account": "own"}))


def test_own_labels_beat_inherited_ones_and_the_first_profile_wins():
    state = state_of(*LABELLED)
    assert state.labels_of(state.endpoints[LABELLED[-1][0]]) == {
        "projectcalico.org/namespace": "libnetwork",
        "projectcalico.org/orchestrator": "libnetwork",
        "role": "db",  # own
        "tier": "back",  # p1 before p2
        "zone": "z1",
        "pcns.team": "inherited"}  # own pcns./pcsa. labels are dropped, a profile's are not


@pytest.mark.parametrize("selector, selected", [
    ("role == 'db'", True),  # a container label
    ("role == 'web'", False),
    ("tier == 'back' && zone == 'z1'", True),
    ("tier == 'front'", False),
    ("has(pcsa.account)", False),
    ("pcns.team == 'own'", False),
    ("pcns.team == 'inherited'", True),
    ("projectcalico.org/orchestrator == 'libnetwork'", True),
    ("!has(p3)", True),  # a missing profile adds nothing
])
def test_policies_select_endpoints_by_their_full_label_set(selector, selected):
    _, ingress, _ = endpoint_chains(state_of(*LABELLED, gnp("sel", selector=selector)))
    assert ("policy pi-default.sel" in skeleton(ingress)) == selected


# ---------------------------------------------------------------------------
# Rule rendering (§2.5, §6.2)

def both(text: str) -> list[str]:
    return [f"{V4} {text}", f"{V6} {text}"]


def each(*texts: str) -> list[str]:
    """Several rules per family."""
    return [f"{v} {text}" for v in (V4, V6) for text in texts]


DB = "role == 'db'"


def at(selector: str, family: int) -> str:
    return "@" + set_name(parse(selector), family)


RENDERED = [  # (the rule's fields, its nft matches per family)
    ({}, both("")),
    ({"protocol": "TCP"}, both("meta l4proto 6")),
    ({"protocol": "SCTP"}, both("meta l4proto 132")),
    ({"protocol": "UDPLite"}, both("meta l4proto 136")),
    ({"protocol": 47}, both("meta l4proto 47")),
    ({"notProtocol": "UDP"}, both("meta l4proto != 17")),
    ({"notProtocol": "ICMP"}, both("meta l4proto != 1")),  # limits no family
    ({"protocol": "TCP", "destination": {"ports": [443]}}, both("meta l4proto 6 th dport 443")),
    # Lists holding ranges or CIDRs: a rule per range or CIDR, one for the
    # singles (no interval set: libnftables re-reads those at every change)
    ({"protocol": "UDP", "destination": {"ports": [53, "8000:8080", 54]}},
     each("meta l4proto 17 th dport { 53, 54 }", "meta l4proto 17 th dport 8000-8080")),
    ({"protocol": "TCP", "source": {"ports": ["1024:65535"]}},
     both("meta l4proto 6 th sport 1024-65535")),
    ({"protocol": "TCP", "destination": {"notPorts": [22, 2379]}},
     both("meta l4proto 6 th dport != { 22, 2379 }")),
    ({"protocol": 132, "source": {"notPorts": ["5:6"]}, "destination": {"ports": [9]}},
     both("meta l4proto 132 th sport != 5-6 th dport 9")),
    # One port alone negated on each side: nft 1.0 would join two `!=` into
    # one test of both (22 -> 80 let through); ranges of one it never joins.
    ({"protocol": "UDP", "source": {"notPorts": [22]}, "destination": {"notPorts": [23]}},
     both("meta l4proto 17 th sport != 22-22 th dport != 23-23")),
    ({"protocol": "TCP", "destination": {"ports": [80, "80:90", 80, "85:95"]}},  # overlapping
     both("meta l4proto 6 th dport 80-95")),
    ({"protocol": "TCP", "destination": {"notPorts": [22, "8000:8080", 23, "9000:9001"]}},
     both("meta l4proto 6 th dport != { 22, 23 } th dport != 8000-8080 th dport != 9000-9001")),
    ({"protocol": "TCP", "source": {"ports": ["1:2", 5]}, "destination": {"ports": [7, "8:9"]}},
     each(*(f"meta l4proto 6 th sport {s} th dport {d}"
            for s in ("5", "1-2") for d in ("7", "8-9")))),
    ({"protocol": "ICMP"}, [f"{V4} meta l4proto 1"]),
    ({"protocol": "ICMP", "icmp": {"type": 8}}, [f"{V4} meta l4proto 1 icmp type 8"]),
    ({"protocol": "ICMP", "icmp": {"type": 3, "code": 4}},
     [f"{V4} meta l4proto 1 icmp type 3 icmp code 4"]),
    ({"protocol": "ICMPv6", "icmp": {"type": 128}}, [f"{V6} meta l4proto 58 icmpv6 type 128"]),
    ({"protocol": "ICMP", "notICMP": {"type": 8}}, [f"{V4} meta l4proto 1 icmp type != 8"]),
    ({"protocol": "ICMP", "notICMP": {"type": 3, "code": 4}},  # not (3 and 4): §6.1 caveat
     [f"{V4} meta l4proto 1 icmp type . icmp code != {{ 3 . 4 }}"]),
    ({"protocol": "ICMPv6", "notICMP": {"type": 1, "code": 0}},
     [f"{V6} meta l4proto 58 icmpv6 type . icmpv6 code != {{ 1 . 0 }}"]),
    ({"protocol": "ICMP", "ipVersion": 4}, [f"{V4} meta l4proto 1"]),
    ({"ipVersion": 4}, [f"{V4} "]),
    ({"ipVersion": 6}, [f"{V6} "]),
    ({"source": {"nets": ["10.0.0.0/8"]}}, [f"{V4} ip saddr 10.0.0.0/8"]),
    ({"source": {"nets": ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16"]}},  # 10.1 in 10
     [f"{V4} ip saddr 10.0.0.0/8", f"{V4} ip saddr 192.168.0.0/16"]),
    ({"source": {"nets": ["10.0.0.1/32", "10.0.0.9", "10.2.0.0/16"]}},
     [f"{V4} ip saddr {{ 10.0.0.1, 10.0.0.9 }}", f"{V4} ip saddr 10.2.0.0/16"]),
    ({"destination": {"nets": ["fd00::/8"]}}, [f"{V6} ip6 daddr fd00::/8"]),  # no IPv4 rule
    ({"source": {"notNets": ["10.0.0.0/8"]}}, [f"{V4} ip saddr != 10.0.0.0/8"]),
    ({"destination": {"notNets": ["fd00::/8", "fe80::/10"]}},
     [f"{V6} ip6 daddr != fd00::/8 ip6 daddr != fe80::/10"]),
    ({"source": {"nets": ["0.0.0.0/0"]}, "destination": {"notNets": ["10.0.0.1/32"]}},
     [f"{V4} ip saddr 0.0.0.0/0 ip daddr != 10.0.0.1-10.0.0.1"]),  # not merged (_none_of)
    ({"ipVersion": 6, "source": {"nets": ["::/0"]}}, [f"{V6} ip6 saddr ::/0"]),
    ({"source": {"selector": DB}},
     [f"{V4} ip saddr {at(DB, 4)}", f"{V6} ip6 saddr {at(DB, 6)}"]),
    ({"destination": {"notSelector": "has(x)"}},
     [f"{V4} ip daddr != {at('has(x)', 4)}", f"{V6} ip6 daddr != {at('has(x)', 6)}"]),
    ({"source": {"selector": DB, "notSelector": "has(c)"}, "ipVersion": 6},
     [f"{V6} ip6 saddr {at(DB, 6)} ip6 saddr != {at('has(c)', 6)}"]),
    ({"protocol": "TCP",
      "source": {"nets": ["10.0.0.0/8"], "selector": "has(x)", "ports": [80]},
      "destination": {"nets": ["10.2.0.0/16"], "notSelector": "has(y)", "ports": [443]}},
     [f"{V4} meta l4proto 6 ip saddr 10.0.0.0/8 ip saddr {at('has(x)', 4)} th sport 80 "
      f"ip daddr 10.2.0.0/16 ip daddr != {at('has(y)', 4)} th dport 443"]),
]


def rule_of(fields: dict):
    spec = {"selector": "all()", "ingress": [{"action": "Allow", **fields}]}
    return policy_from_resource(Resource("GlobalNetworkPolicy", "default.r", spec=spec)).ingress[0]


@pytest.mark.parametrize("fields, matches", RENDERED, ids=lambda v: json.dumps(v)
                         if isinstance(v, dict) else "")
def test_a_rule_renders_nft_rules_per_family_it_applies_to(fields, matches):
    chains = Chains()
    rule = rule_of(fields)
    assert list(render_rule(chains, rule)) == [f"{m} {ALLOW}".replace("  ", " ")
                                               for m in matches]
    assert chains.selectors == rule_selectors(rule)  # each one needs its sets


@pytest.mark.parametrize("action, verdict", [
    ("Allow", "meta mark set meta mark | 0x10000 return"),
    ("Pass", "meta mark set meta mark | 0x20000 return"),
    ("Deny", "drop"),
    ("Log", 'log prefix "calico-packet: " level notice'),  # no verdict: evaluation goes on
])
def test_actions(action, verdict):
    rule = rule_of({"action": action, "protocol": "ICMP"})
    assert list(render_rule(Chains(), rule)) == [f"{V4} meta l4proto 1 {verdict}"]


@pytest.mark.parametrize("prefix, length, hashed", [
    ("pi-", 252, False), ("pi-", 253, True), ("pri-", 251, False), ("pri-", 252, True)])
def test_chain_names_fit_nftables_limit(prefix, length, hashed):
    name = "n" * length
    got = chain_name(prefix, name)
    assert len(got) <= 255 and got.startswith(prefix)
    assert (got != prefix + name) == hashed
    assert chain_name(prefix, name) == got  # stable: every host and run agrees


# ---------------------------------------------------------------------------
# The scripts, as nft reads them

class NftNamespace:
    """nft in a throw-away network namespace."""

    def __init__(self, netns: str):
        self.netns = netns

    def nft(self, script: str, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, "nft", *options, "-f", "-"],
                              input=script, capture_output=True, text=True, timeout=60)

    def check(self, script: str) -> None:
        """nft -c: parsed, and validated by the kernel, which commits nothing."""
        result = self.nft(script, "-c")
        assert result.returncode == 0, f"nft -c refused the script: {result.stderr}\n{script}"

    def load(self, script: str) -> None:
        result = self.nft(script)
        assert result.returncode == 0, f"nft refused the script: {result.stderr}\n{script}"

    def listing(self) -> dict:
        """Our table as the kernel holds it, without handles or order of
        creation: chains with their hook and rules, sets with their elements."""
        out = subprocess.run(["ip", "netns", "exec", self.netns, "nft", "-j", "list", "table",
                              FAMILY, TABLE], capture_output=True, text=True, check=True).stdout
        table = {}
        for item in json.loads(out)["nftables"]:
            (kind, body), = item.items()
            if kind == "chain":
                table[("chain", body["name"])] = [body.get(k) for k in ("hook", "prio", "policy")]
            elif kind == "set":
                table[("set", body["name"])] = [body["type"], sorted(
                    json.dumps(e, sort_keys=True) for e in body.get("elem", ()))]
            elif kind == "rule":
                table.setdefault(("rules", body["chain"]), []).append(body["expr"])
        return table


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.skip("needs root (for a network namespace) and nft")
    with Lab() as lab:
        yield NftNamespace(lab.netns("policy-nft-check"))


@pytest.fixture
def ruleset_of(monkeypatch, tmp_path):
    """ruleset_of(*records): the Ruleset a fresh engine fed those records
    programs (its nft runs nothing), guarding an etcd of each kind."""
    monkeypatch.setattr(nft, "run", lambda script: None)

    def build(*records) -> Ruleset:
        engine = PolicyEngine(NODE, str(tmp_path / "status.json"), etcd_endpoints=GUARDED)
        for key, value in records:
            feed(engine, key, value)
        engine.batch_done(True, True)
        return engine.nft.programmed
    return build


GUARDED = ("http://10.0.0.1:2379", "https://[fd00::1]:2379", "http://127.0.0.1:2379")
LONG_PROFILES = ("p" * 251, "q" * 252)  # pri-<251> is 255 characters, the longest name
EVERY_RULE = [{"action": "Allow", **fields} for fields, _ in RENDERED] + [
    {"action": action, "protocol": "UDP"} for action in ("Log", "Deny", "Pass")]
# What etcd holds, step by step: (step, records written or deleted).
STEPS = [
    ("empty", []),
    ("networks", [profile("net1"), profile("net2"), wep("a", "10.65.0.1", "fd00::1"),
                  wep("b", profiles=("net2",))]),
    ("remote endpoints", [wep("r1", "10.65.9.1", "fd00::9:1", node=OTHER_NODE),
                          wep("r2", "10.65.9.2", node=OTHER_NODE, profiles=("net2",))]),
    ("policies", [gnp("rich", order=10, ingress=EVERY_RULE, egress=EVERY_RULE),
                  gnp("egress-only", selector="has(net2)", types=["Egress"],
                      egress=[{"action": "Deny", "destination": {"selector": "has(net1)"}}]),
                  gnp("x" * 245, order=1, ingress=[{"action": "Pass"}])]),
    ("profiles with every rule", [
        profile("rules", ingress=EVERY_RULE, egress=EVERY_RULE[::-1], labels={"rules": ""}),
        *(profile(name, labels={}) for name in LONG_PROFILES),
        wep("c", "10.65.0.3", profiles=(*LONG_PROFILES, "rules", "missing"))]),
    ("host endpoints", [
        hep("h1-eth0", "eth0", "10.0.0.11", "fd00::11", profiles=("net1",),
            labels={"role": "lan"}),
        hep("h1-all", "*"), hep("h2-eth0", "eth0", "10.0.0.12", node=OTHER_NODE),
        gnp("hosts", selector="role == 'lan'", ingress=[
            {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'lan'"},
             "destination": {"ports": [7070]}}]),
        gnp("untracked", selector="role == 'lan'", doNotTrack=True, applyOnForward=True,
            ingress=[{"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}],
            egress=[{"action": "Allow", "protocol": "UDP", "source": {"ports": [53]}}]),
        gnp("pre-dnat", selector="has(role)", preDNAT=True, applyOnForward=True,
            types=["Ingress"], ingress=[{"action": "Deny", "source": {"nets": ["10.9.0.0/16"]}}]),
        gnp("forwarded", selector="all()", applyOnForward=True, types=["Ingress", "Egress"],
            ingress=[{"action": "Allow", "source": {"selector": "has(net1)"}}],
            egress=[{"action": "Pass"}]),
        felix_configuration("default", failsafeInboundHostPorts=[
            {"protocol": "TCP", "port": 22, "net": "10.0.0.0/8"},
            {"protocol": "UDP", "port": 68, "net": "fd00::/64"}, {"port": 2379}])]),
    ("tunnels", [calico_node(NODE, "10.0.0.11/24", "fd00::11/64"),
                 calico_node(OTHER_NODE, "10.0.0.12/24"),
                 ip_pool("ipip", "10.65.0.0/16", ipipMode="Always"),
                 ip_pool("vxlan6", "fd00::/64", vxlanMode="CrossSubnet")]),
    ("policy changed", [gnp("rich", order=5, ingress=EVERY_RULE[::2], egress=[])]),
    ("local endpoint removed", [gone(wep("a"))]),
    ("remote endpoint removed", [gone(wep("r1", node=OTHER_NODE))]),
    ("policy removed", [gone(gnp("rich"))]),
    ("profile removed", [gone(profile("rules"))]),
    ("host endpoint removed", [gone(hep("h1-eth0", "eth0"))]),
    ("tunnels changed", [ip_pool("ipip", "10.65.0.0/16", vxlanMode="Always"),
                         gone(calico_node(OTHER_NODE, ""))]),
    ("local endpoints removed", [gone(wep("b")), gone(wep("c"))]),
]
STATES = list(itertools.accumulate((list(records) for _, records in STEPS),
                                   lambda done, more: done + more))
NAMES = [name for name, _ in STEPS]


@pytest.mark.parametrize("step", range(len(STEPS)), ids=NAMES)
def test_nft_accepts_the_full_script(netns, ruleset_of, step):
    netns.check(full_script(ruleset_of(*STATES[step])))


def test_the_rich_ruleset_has_everything_to_check(ruleset_of):
    """The states above exercise what the checks are for."""
    rich = ruleset_of(*STATES[NAMES.index("profiles with every rule")])
    chains = "\n".join(rule for rules in rich.chains.values() for rule in rules)
    for needle in ("icmpv6 type . icmpv6 code", "ip6 daddr !=", "th sport", "log prefix",
                   "ip daddr . tcp dport", "ip6 daddr . tcp dport", "fib daddr type local",
                   *(chain_name("pri-", name) for name in LONG_PROFILES),
                   chain_name("pi-", "default." + "x" * 245), "vmap"):
        assert needle in chains
    assert any(members for _, members in rich.sets.values())


def removal_problems(old: Ruleset, new: Ruleset, script: str) -> list[str]:
    """Where the script deletes a chain or set before every rule using it
    is flushed, or a chain without flushing it."""
    lines = script.splitlines()
    index = {line: i for i, line in enumerate(lines)}
    problems = []

    def flushed_first(chain, deleted_at, why):
        if index.get(f"flush chain {T} {chain}", len(lines)) > deleted_at:
            problems.append(f"{chain} is not flushed before {why} is deleted")

    for kind, gone_names, uses in (
            ("chain", set(old.chains) - set(new.chains), r"(?:jump|goto) {}(?=[\s,}}]|$)"),
            ("set", set(old.sets) - set(new.sets), r"@{}(?=\s|$)")):
        for name in sorted(gone_names):
            deleted_at = index.get(f"delete {kind} {T} {name}")
            if deleted_at is None:
                problems.append(f"{kind} {name} is not deleted")
                continue
            if kind == "chain":
                flushed_first(name, deleted_at, name)
            pattern = re.compile(uses.format(re.escape(name)))
            for chain, rules in old.chains.items():
                if any(pattern.search(rule) for rule in rules):
                    flushed_first(chain, deleted_at, name)
    return problems


TRANSITIONS = [(i, i + 1) for i in range(len(STEPS) - 1)] + [
    (0, NAMES.index("profiles with every rule")), (NAMES.index("profiles with every rule"), 0),
    (NAMES.index("networks"), NAMES.index("local endpoints removed"))]


@pytest.mark.parametrize("before, after", TRANSITIONS,
                         ids=[f"{NAMES[i]} -> {NAMES[j]}" for i, j in TRANSITIONS])
def test_nft_accepts_the_diff_script_and_it_leads_to_the_new_ruleset(netns, ruleset_of,
                                                                     before, after):
    old, new = ruleset_of(*STATES[before]), ruleset_of(*STATES[after])
    netns.load(full_script(new))
    wanted = netns.listing()
    netns.load(full_script(old))
    script = diff_script(old, new)
    assert removal_problems(old, new, script) == []
    if script:
        netns.check(script)
        netns.load(script)
    assert netns.listing() == wanted


def test_removal_order_is_checked():
    """removal_problems itself: a chain deleted while a rule still jumps to it."""
    old = Ruleset({"s4_x": ("ipv4_addr", frozenset())},
                  {"a": ("jump b",), "b": ("ip saddr @s4_x drop",)})
    new = Ruleset({}, {"a": ()})
    bad = f"flush chain {T} b\ndelete chain {T} b\nflush chain {T} a\ndelete set {T} s4_x\n"
    assert removal_problems(old, new, bad) == ["a is not flushed before b is deleted"]
    assert removal_problems(old, new, diff_script(old, new)) == []


def test_a_remote_endpoint_coming_and_going_changes_set_elements_only(ruleset_of):
    base = STATES[NAMES.index("networks")]
    remote = wep("r", "10.65.9.9", "fd00::9:9", node=OTHER_NODE)
    old, new = ruleset_of(*base), ruleset_of(*base, remote)
    net1 = parse("has(net1)")
    assert new.chains == old.chains
    assert diff_script(old, new) == (
        f"add element {T} {set_name(net1, 4)} {{ 10.65.9.9 }}\n"
        f"add element {T} {set_name(net1, 6)} {{ fd00::9:9 }}\n")
    assert diff_script(new, old) == (
        f"delete element {T} {set_name(net1, 4)} {{ 10.65.9.9 }}\n"
        f"delete element {T} {set_name(net1, 6)} {{ fd00::9:9 }}\n")
    assert diff_script(old, ruleset_of(*base)) == ""


def test_large_sets_are_written_in_bounded_statements():
    members = frozenset(f"10.{i // 256}.{i % 256}.1" for i in range(2500))
    script = full_script(Ruleset({"s4_big": ("ipv4_addr", members)}, {}))
    elements = [line for line in script.splitlines() if line.startswith("add element")]
    assert [line.count(",") + 1 for line in elements] == [1000, 1000, 500]


def test_tunnels_follow_the_hosts_addresses_and_the_pools_modes(ruleset_of, tmp_path):
    """VXLAN and IPIP are accepted from the Nodes' addresses; dropped from
    others only for an encapsulation some pool uses (Felix's rules)."""
    hosts = [calico_node(NODE, "10.0.0.11/24", "fd00::11/64"),
             calico_node(OTHER_NODE, "10.0.0.12/24")]
    accept = ["meta nfproto ipv4 udp dport 4789 ip saddr @all-hosts-net fib daddr type local "
              "accept",
              "meta nfproto ipv6 udp dport 4789 ip6 saddr @all-hosts-net-v6 fib daddr type "
              "local accept"]
    plain = ruleset_of(*hosts, ip_pool("plain", "10.65.0.0/16"))
    assert plain.sets["all-hosts-net"] == ("ipv4_addr", {"10.0.0.11", "10.0.0.12"})
    assert plain.sets["all-hosts-net-v6"] == ("ipv6_addr", {"fd00::11"})
    assert plain.chains["tunnels-in"] == tuple(accept)
    assert plain.chains["tunnels-out"] == ()
    used = ruleset_of(*hosts, ip_pool("ipip", "10.65.0.0/16", ipipMode="CrossSubnet"),
                      ip_pool("vxlan", "10.66.0.0/16", vxlanMode="Always"),
                      ip_pool("vxlan6", "fd00:65::/64", vxlanMode="Always"))
    assert used.chains["tunnels-in"] == (
        "ip protocol 4 ip saddr @all-hosts-net fib daddr type local accept",
        "ip protocol 4 drop",
        accept[0], "meta nfproto ipv4 udp dport 4789 fib daddr type local drop",
        accept[1], "meta nfproto ipv6 udp dport 4789 fib daddr type local drop")
    assert used.chains["tunnels-out"] == ("ip protocol 4 ip daddr @all-hosts-net accept",)
    # What else a Node holds (its VTEP) is no change to policy.
    engine = PolicyEngine(NODE, str(tmp_path / "status.json"))
    assert feed(engine, *hosts[1])
    vtep = Resource("Node", OTHER_NODE, spec={"bgp": {"ipv4Address": "10.0.0.12/24"},
                                              "ipv4VXLANTunnelAddr": "10.65.1.0"})
    assert not feed(engine, vtep.key, vtep.to_json().encode())



def test_hooks_before_filter_only_while_policies_decide_there(ruleset_of):
    """Every hook costs every packet: raw and mangle chains only while a host
    endpoint has doNotTrack or preDNAT policies; established flows leave
    the forward chain at its first rule, as with conntrack alone."""
    plain = ruleset_of(*STATES[NAMES.index("remote endpoints")])
    assert sorted(plain.base) == ["forward", "input", "output"]
    assert plain.base["forward"][1][:2] == ("ct state established,related accept",
                                            "jump from-hep-fwd")
    assert not any("0x10000 ==" in rule for _, rules in plain.base.values() for rule in rules)
    hosts = ruleset_of(*STATES[NAMES.index("host endpoints")])
    assert sorted(hosts.base) == ["forward", "input", "mangle-prerouting", "output",
                                  "raw-output", "raw-prerouting"]
    assert hosts.base["forward"][1][:2] == ("ct state established,related accept",
                                            f"{NOT_ACCEPTED} jump from-hep-fwd")
    assert f"{ACCEPTED} accept" in hosts.base["input"][1]
