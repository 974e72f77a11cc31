"""From policy state to nftables chains, in Felix's shape (calico-policy.md
§4-§6): an ingress chain (tw-) and an egress chain (fw-) for local workload
endpoints, which jump to one chain per policy (pi-/po-) and per profile
(pri-/pro-).  Felix renders the tw-/fw- chains per endpoint; here workloads
with the same policies (in order), profiles and published ports share one
pair, named by a hash of what selects it (tw-<hash>), rendered once: a
thousand containers of a few kinds are a few dozen chains, not thousands.
A policy or profile chain marks what it allows (accept bit) or passes (pass
bit) and returns; the endpoint chain returns on the accept
bit, ends the tier with a drop unless the pass bit is set, and drops when no
profile allowed.  Returning, not accepting, lets a same-host packet meet
both the sender's egress and the receiver's ingress chain.

Selector matches become named sets of addresses (s4_<id>, s6_<id>), whose
members the engine keeps up to date without touching the rules.

A workload's egress chain starts with the guard (agent/policy/guarded.py):
the datastore's client ports, dropped unless a rule of that endpoint's
egress policies or profiles names them; then VXLAN and IPIP are dropped
(tunnels.py says why).

A host endpoint of this node gets chains of four kinds, as Felix renders
them (felix/rules/endpoints.go), each named for its interface (<if>, or
any-interface-at-all for the "*" endpoint):
* normal: fh-<if> for what enters the host from the interface, th-<if> for
  what the host sends out of it: IPv6 neighbour discovery, conntrack
  (replies pass), the failsafe chain, the policy tier, the profiles, drop.
  A host endpoint without policies or profiles passes only the failsafe
  ports.  Policies flagged doNotTrack or preDNAT are not here.
* forward: fhfw-<if>/thfw-<if> for what the host forwards from or to the
  interface: conntrack, then the applyOnForward policies (tier ending in a
  drop), no profiles; without such policies, allowed.
* preDNAT: mangle-fh-<if>, before DNAT: conntrack, failsafe, the preDNAT
  policies (ingress only); what none decides goes on to normal policy.
* untracked: raw-fh-<if>/raw-th-<if>, before conntrack: the raw failsafe
  chains (which also pass replies by source port), the doNotTrack
  policies, whose Allow also skips conntrack; what none decides goes on.
  Not for the "*" endpoint, as in Felix.
An Allow in the preDNAT or untracked chains is final: the packet carries the
accept mark, which the later hooks accept at once.
"""

import hashlib
import itertools
import logging
from collections import Counter
from dataclasses import dataclass, field

import netaddr

from agent.policy.guarded import Guarded, guard_rules, named_by
from agent.policy.state import Endpoint, PolicyState
from agent.published import PUBLISHED_MARK
from datastore.host_endpoint import ALL_INTERFACES
from datastore.policy import EntityRule, GlobalNetworkPolicy, Profile, Rule
from datastore.selector import Selector

LOG = logging.getLogger(__name__)

ACCEPT_MARK = 0x10000
PASS_MARK = 0x20000
CLEAR_MARKS = f"meta mark set meta mark & {0xFFFFFFFF & ~(ACCEPT_MARK | PASS_MARK):#010x}"
ACCEPTED = f"meta mark & {ACCEPT_MARK:#x} == {ACCEPT_MARK:#x}"
NOT_ACCEPTED = f"meta mark & {ACCEPT_MARK:#x} == 0"
NOT_PASSED = f"meta mark & {PASS_MARK:#x} == 0"
LOG_PREFIX = "calico-packet: "
VXLAN_PORT = 4789
IPIP_PROTOCOL = 4  # by number, as Felix: the name may be unknown
ND_TYPES = "{ 130, 131, 132, 133, 135, 136 }"  # MLD, RS, NS, NA: before policy (§4.6)
FAILSAFE_IN, FAILSAFE_OUT = "failsafe-in", "failsafe-out"
RAW_FAILSAFE_IN, RAW_FAILSAFE_OUT = "raw-failsafe-in", "raw-failsafe-out"
ACCEPT_AND_RETURN = f"meta mark set meta mark | {ACCEPT_MARK:#x} return"
# Kinds of endpoint chain (Felix's chain types).
NORMAL, FORWARD, PRE_DNAT, UNTRACKED = "normal", "forward", "preDNAT", "untracked"
# Host endpoint chains: kind -> direction -> (chain prefix, dispatch chain);
# preDNAT policy applies to ingress only.
HOST_CHAINS = {
    NORMAL: {"Ingress": ("fh-", "from-hep"), "Egress": ("th-", "to-hep")},
    FORWARD: {"Ingress": ("fhfw-", "from-hep-fwd"), "Egress": ("thfw-", "to-hep-fwd")},
    PRE_DNAT: {"Ingress": ("mangle-fh-", "mangle-from-hep")},
    UNTRACKED: {"Ingress": ("raw-fh-", "raw-from-hep"), "Egress": ("raw-th-", "raw-to-hep")},
}
HOST_DISPATCH = tuple(d for kind in HOST_CHAINS.values() for _, d in kind.values())
_CONNTRACK = ("ct state established,related accept", "ct state invalid drop")
_ALL_INTERFACES_CHAIN = "any-interface-at-all"  # Felix's; no interface has so long a name
DIRECTIONS = ("Ingress", "Egress")
_MAX_NAME = 255
_SHARED_HASH = 16  # hex digits naming a shared workload chain: 64 bits, no collision in practice
_FAMILY = {4: ("ipv4", "ip", "icmp"), 6: ("ipv6", "ip6", "icmpv6")}
_VERSION = {"ip": 4, "ip6": 6}
_ACTIONS = {
    "Allow": ACCEPT_AND_RETURN,
    "Pass": f"meta mark set meta mark | {PASS_MARK:#x} return",
    "Deny": "drop",
    "Log": f'log prefix "{LOG_PREFIX}" level notice',
}


@dataclass
class Chains:
    """The regular chains one state compiles to, and what they need."""

    rules: dict[str, tuple[str, ...]] = field(default_factory=dict)  # chain -> rules
    ingress: dict[str, str] = field(default_factory=dict)  # interface -> its ingress chain
    egress: dict[str, str] = field(default_factory=dict)
    # host endpoints: dispatch chain (HOST_DISPATCH) -> interface ("*" too)
    # -> its chain
    host: dict[str, dict[str, str]] = field(default_factory=dict)
    selectors: set[Selector] = field(default_factory=set)  # each needs s4_/s6_ sets

    @property
    def rule_count(self) -> int:
        return sum(len(r) for r in self.rules.values())

    def add(self, other: "Chains") -> None:
        self.rules.update(other.rules)
        self.ingress.update(other.ingress)
        self.egress.update(other.egress)
        for dispatch, chains in other.host.items():
            self.host.setdefault(dispatch, {}).update(chains)
        self.selectors |= other.selectors


def chain_name(prefix: str, name: str) -> str:
    """prefix + name, or a hash of the name where that passes nftables'
    limit of 255 characters (Calico names may be 253 long)."""
    if len(prefix) + len(name) <= _MAX_NAME:
        return prefix + name
    return prefix + hashlib.sha256(name.encode()).hexdigest()


def set_name(selector: Selector, family: int) -> str:
    return f"s{family}_{selector.unique_id[2:].replace('-', '_')[:40]}"


class Compiler:
    """Compiles a node's chains, remembering each local endpoint's chains,
    each shared workload chain and each policy and profile chain until told
    they are stale: after a change of one local endpoint, only that
    endpoint's chains are compiled again; after a change of one policy's or
    profile's rules, only its chains and the shared chains naming it."""

    def __init__(self, node: str, guarded: frozenset[Guarded] = frozenset()):
        self.node = node
        self.guarded = guarded  # set it with forget_all()
        self.forget_all()

    def forget_all(self) -> None:
        """What a policy selects, or the guarded destinations, changed: any
        chain may differ."""
        # (endpoint key, interface) -> (its profiles, its own chains and
        # the chains they jump to), for host endpoints (one may have several
        # interfaces, by its expectedIPs)
        self._endpoints: dict[tuple[str, str], tuple[tuple[str, ...], tuple]] = {}
        # pi-/po-/pri-/pro- name -> (its rules, the selectors they need)
        self._rule_chains: dict[str, tuple[tuple[str, ...], set[Selector]]] = {}
        # what selects a workload's tw-/fw- chain -> (its name, its rules,
        # the chains it jumps to)
        self._shared: dict[tuple, tuple[str, tuple[str, ...], dict]] = {}
        self._selection = None
        # Local workloads, kept up to date one at a time: key -> (interface,
        # profiles, its shared chains' keys and names: _workload()); each
        # interface's chains; how many use each shared chain.
        self._workloads: dict[str, tuple[str, tuple[str, ...], tuple]] = {}
        self._ingress: dict[str, str] = {}
        self._egress: dict[str, str] = {}
        self._used: Counter = Counter()
        self._stale: set[str] | None = None  # workloads to compile again; None: all
        self._interfaces: tuple[dict[str, str], dict[str, str]] | None = None  # compile()

    def forget(self, key: str) -> None:
        """Local endpoint `key` changed, or is gone."""
        for cached in [k for k in self._endpoints if k[0] == key]:
            del self._endpoints[cached]
        if self._stale is not None:
            self._stale.add(key)

    def forget_rules(self, kind: str, name: str) -> None:
        """Policy (kind "policy") or profile `name` changed its rules only,
        or the profile came or went: its own chains, and the shared chains
        and host endpoints' chains naming it (their guard, or their jump or
        drop for a missing profile); a profile's endpoints too (their labels)."""
        if kind == "policy":
            prefixes, place = ("pi-", "po-"), 1
        else:
            prefixes, place = ("pri-", "pro-"), 2
        for prefix in prefixes:
            self._rule_chains.pop(chain_name(prefix, name), None)
        self._shared = {k: v for k, v in self._shared.items() if name not in k[place]}
        if kind == "profile":
            self._endpoints = {k: v for k, v in self._endpoints.items() if name not in v[0]}
            if self._stale is not None:
                self._stale.update(k for k, w in self._workloads.items() if name in w[1])

    def compile(self, state: PolicyState,
                host_addresses: dict[str, frozenset[str]] | None = None) -> Chains:
        """host_addresses: interface -> its addresses, for host endpoints
        without interfaceName."""
        if self._selection is None:
            self._selection = _Selection(state)
        if self._compile_workloads(state) or self._interfaces is None:
            self._interfaces = (dict(self._ingress), dict(self._egress))
        # The same dicts until a workload changes (they are not to be changed):
        # the interface maps are then known unchanged at once.
        chains = Chains(ingress=self._interfaces[0], egress=self._interfaces[1])
        compiled, jumped = {}, {}
        for endpoint in state.local_host_endpoints(self.node, host_addresses):
            cached = (endpoint.key, endpoint.interface)
            entry = compiled[cached] = self._endpoints.get(cached) or \
                (endpoint.profiles, self._endpoint(state, endpoint))
            own, jumps = entry[1]
            chains.add(own)
            jumped.update(jumps)
        self._endpoints = compiled
        for selects in self._used:
            name, rules, jumps = self._shared_chain(state, selects)
            chains.rules[name] = rules
            jumped.update(jumps)
        # Many endpoints jump to one chain: add it once.
        rule_chains = [self._rule_chain(state, name, source) for name, source in jumped.items()]
        chains.rules.update(zip(jumped, (rules for rules, _ in rule_chains)))
        chains.selectors.update(*(selectors for _, selectors in rule_chains))
        return chains

    def _compile_workloads(self, state: PolicyState) -> bool:
        """The stale workloads' chains (all of them after forget_all): a
        change of one of a thousand costs that one.  True when any was."""
        anew = self._stale is None
        if anew:
            self._workloads, self._ingress, self._egress = {}, {}, {}
            self._used = Counter()
            keys = [e.key for e in state.local_endpoints(self.node)]
        else:
            keys = self._stale
        self._stale = set()
        for key in keys:
            self._unplace(state, key)
            endpoint = state.endpoints.get(key)
            if endpoint is not None and endpoint.node == self.node and endpoint.interface \
                    and not endpoint.host:
                self._place(key, (endpoint.interface, endpoint.profiles,
                                  self._workload(state, endpoint)))
        return anew or bool(keys)

    def _place(self, key: str, workload: tuple) -> None:
        interface, _, (selects_in, name_in, selects_out, name_out) = workload
        self._workloads[key] = workload
        self._ingress[interface], self._egress[interface] = name_in, name_out
        self._used.update((selects_in, selects_out))

    def _unplace(self, state: PolicyState, key: str) -> None:
        workload = self._workloads.pop(key, None)
        if workload is None:
            return
        interface, _, (selects_in, _, selects_out, _) = workload
        self._used.subtract((selects_in, selects_out))
        self._used += Counter()  # drops what no workload uses
        del self._ingress[interface], self._egress[interface]
        # Another workload on that interface (a stale record): it has it now.
        for held in self._workloads.values():
            if held[0] == interface:
                self._ingress[interface], self._egress[interface] = held[2][1], held[2][3]
                break

    def _workload(self, state: PolicyState, endpoint: Endpoint) -> tuple:
        """A workload's shared chains: (key, name) of the ingress one, then of
        the egress one."""
        labels = state.labels_of(endpoint)
        found = ()
        for direction in DIRECTIONS:
            # Everything a workload's chain depends on.
            selects = (direction, tuple(p.name for p in self._selection.policies(
                state, labels, direction, NORMAL)), endpoint.profiles, endpoint.publishes)
            found += (selects, _shared_name(selects))
        return found

    def _endpoint(self, state: PolicyState, endpoint: Endpoint) -> tuple:
        """A host endpoint's own chains and the chains they jump to."""
        own, jumps = Chains(), {}
        self._host_endpoint(own, jumps, state, endpoint, state.labels_of(endpoint))
        return own, jumps

    def _shared_chain(self, state: PolicyState, selects: tuple):
        """The tw-/fw- chain of the workloads so selected: (name, rules, jumps)."""
        shared = self._shared.get(selects)
        if shared is None:
            direction, names, profiles, publishes = selects
            inbound = direction == "Ingress"
            policies = [state.policies[n] for n in names]
            name = _shared_name(selects)
            prelude = () if inbound else guard_rules(self._closed(state, profiles, policies))
            jumps = {}
            shared = self._shared[selects] = (name, tuple(_endpoint_chain(
                jumps, state, profiles, direction, policies, prelude,
                publishes=publishes)), jumps)
        return shared

    def _host_endpoint(self, own: Chains, jumps: dict, state: PolicyState, endpoint: Endpoint,
                       labels: dict) -> None:
        """A host endpoint's chains of each kind that it needs: normal and
        forward always, preDNAT and untracked when such policies select it."""
        for kind, directions in HOST_CHAINS.items():
            selected = {d: self._selection.policies(state, labels, d, kind) for d in directions}
            if kind in (PRE_DNAT, UNTRACKED) and not any(selected.values()):
                continue
            if kind == UNTRACKED and endpoint.interface == ALL_INTERFACES:
                LOG.warning("doNotTrack policies do not apply to %s: not to a host endpoint "
                            "of every interface (\"*\"), as in Felix", endpoint.key)
                continue
            for direction, policies in selected.items():
                prefix, dispatch = directions[direction]
                name = prefix + (_ALL_INTERFACES_CHAIN if endpoint.interface == ALL_INTERFACES
                                 else endpoint.interface)
                own.rules[name] = tuple(_endpoint_chain(
                    jumps, state, endpoint.profiles, direction, policies,
                    _host_prelude(kind, direction == "Ingress"), kind, host=True))
                own.host.setdefault(dispatch, {})[endpoint.interface] = name

    def _closed(self, state: PolicyState, profiles: tuple[str, ...],
                policies: list[GlobalNetworkPolicy]) -> list[Guarded]:
        """The guarded destinations no egress rule of these policies and profiles names."""
        rules = [r for p in policies for r in p.egress]
        rules += [r for name in profiles
                  if isinstance(profile := state.profiles.get(name), Profile)
                  for r in profile.egress]
        return [g for g in sorted(self.guarded) if not any(named_by(r, g) for r in rules)]

    def _rule_chain(self, state: PolicyState, name: str, source: tuple[str, str, str]
                    ) -> tuple[tuple[str, ...], set[Selector]]:
        """A policy's or profile's chain (its rules for one direction): its
        rules and the selectors they need; source: ("policy" or "profile",
        its name, the direction)."""
        chain = self._rule_chains.get(name)
        if chain is None:
            kind, held, direction = source
            rules = (state.policies if kind == "policy" else state.profiles)[held].rules(direction)
            rendered = Chains()
            chain = self._rule_chains[name] = (
                tuple(line for rule in rules for line in render_rule(rendered, rule)),
                rendered.selectors)
        return chain


def _shared_name(selects: tuple) -> str:
    """A shared workload chain's name: tw-/fw- and a hash of what selects it."""
    return ("tw-" if selects[0] == "Ingress" else "fw-") + \
        hashlib.sha256(repr(selects).encode()).hexdigest()[:_SHARED_HASH]


class _Selection:
    """Which policies select a label set, per direction, in Felix's order;
    endpoints of one network share a label set, so each is worked out once."""

    def __init__(self, state: PolicyState):
        self._sorted = sorted(state.policies.values(), key=lambda p: p.sort_key)
        self._memo = {}  # by names: a policy whose rules alone change stays selected

    def policies(self, state: PolicyState, labels: dict, direction: str,
                 kind: str) -> list[GlobalNetworkPolicy]:
        """Those of one kind of chain (Felix's tiers: normal, forward, preDNAT,
        untracked), as they are in state now."""
        key = (frozenset(labels.items()), direction)
        if key not in self._memo:
            self._memo[key] = [p.name for p in self._sorted
                               if p.governs(direction) and p.selector.evaluate(labels)]
        return [p for p in map(state.policies.__getitem__, self._memo[key]) if _of_kind(p, kind)]


def _of_kind(policy: GlobalNetworkPolicy, kind: str) -> bool:
    if kind == UNTRACKED:
        return policy.do_not_track
    if kind == PRE_DNAT:
        return policy.pre_dnat
    normal = not (policy.do_not_track or policy.pre_dnat)
    return normal and (kind == NORMAL or policy.apply_on_forward)


def _host_prelude(kind: str, inbound: bool) -> tuple[str, ...]:
    if kind == UNTRACKED:
        return (f"jump {RAW_FAILSAFE_IN if inbound else RAW_FAILSAFE_OUT}",)
    if kind == FORWARD:
        return _CONNTRACK  # no failsafe for forwarded traffic
    nd = () if kind == PRE_DNAT else \
        (f"icmpv6 type {ND_TYPES} accept",)  # or the host loses its IPv6 neighbours
    return (*nd, *_CONNTRACK, f"jump {FAILSAFE_IN if inbound else FAILSAFE_OUT}")


def _endpoint_chain(jumps: dict, state: PolicyState, profiles: tuple[str, ...], direction: str,
                    policies: list[GlobalNetworkPolicy], prelude, kind: str = NORMAL,
                    host: bool = False, publishes: bool = False):
    """The rules of an endpoint's chain of that kind; jumps gets the name of
    each policy or profile chain it jumps to, and what it renders."""
    inbound = direction == "Ingress"
    yield from prelude
    yield CLEAR_MARKS
    if not (inbound or host):
        # No VXLAN or IPIP from workloads (Felix's default, whatever the
        # pools): decapsulated elsewhere, it would carry a forged source.
        yield f"udp dport {VXLAN_PORT} drop"
        yield f"meta l4proto {IPIP_PROTOCOL} drop"
    for policy in policies:
        chain = chain_name("pi-" if inbound else "po-", policy.name)
        jumps[chain] = ("policy", policy.name, direction)
        yield f"{NOT_PASSED} jump {chain}"
        if kind == UNTRACKED:
            yield f"{ACCEPTED} notrack"
        yield f"{ACCEPTED} return"
    if policies and kind in (NORMAL, FORWARD):
        yield f"{NOT_PASSED} drop"  # end of tier; preDNAT and untracked pass on
    if kind == FORWARD and not policies:
        yield ACCEPT_AND_RETURN  # no applyOnForward policy: forwarded traffic is allowed
    if kind != NORMAL:
        return  # profiles apply to normal chains only
    if inbound and publishes:
        # Published means reachable, as on Docker's bridge: a connection to
        # a published port (agent/published.py) passes the profiles, which
        # admit only the network's own endpoints.  Policies selecting the
        # endpoint decide before (their tier ends in a drop).
        yield f"ct mark & {PUBLISHED_MARK:#x} == {PUBLISHED_MARK:#x} {ACCEPT_AND_RETURN}"
    for name in profiles:
        profile = state.profiles.get(name)
        if not isinstance(profile, Profile):
            yield "drop"  # a missing or invalid profile denies (§4.3)
            return
        chain = chain_name("pri-" if inbound else "pro-", name)
        jumps[chain] = ("profile", name, direction)
        yield f"jump {chain}"
        yield f"{ACCEPTED} return"
    yield "drop"


def render_rule(chains: Chains, calico_rule: Rule):
    """nft rules for one Calico rule, per IP family it applies to: one, or
    one per alternative of its lists of ports and nets (below)."""
    for family in (4, 6):
        rule = calico_rule.for_family(family)  # with the nets of that family only
        if rule is None:
            continue
        nfproto, ip, icmp = _FAMILY[family]
        # Each part: its alternatives, any of which matches.
        parts = [(f"meta nfproto {nfproto}",)]
        if rule.protocol is not None:
            parts.append((f"meta l4proto {rule.protocol}",))
        if rule.not_protocol is not None:
            parts.append((f"meta l4proto != {rule.not_protocol}",))
        if rule.icmp is not None:
            parts.append((_icmp(icmp, rule.icmp, negate=False),))
        if rule.not_icmp is not None:
            parts.append((_icmp(icmp, rule.not_icmp, negate=True),))
        for side, entity in (("saddr", rule.source), ("daddr", rule.destination)):
            parts.extend(_entity(chains, entity, ip, side))
        for matches in itertools.product(*parts):
            yield " ".join((*matches, _ACTIONS[rule.action]))


def _entity(chains: Chains, entity: EntityRule, ip: str, side: str):
    """The parts (tuples of alternatives) matching one side of a rule.

    No anonymous set holds a range or a CIDR: libnftables reads back every
    interval set of the table, anonymous ones too, before each transaction
    (6-7 ms with a few hundred of them, against 1 ms without).  So a list
    is one rule per range or CIDR, and one more for its single ports or
    addresses (a plain set); ranges are merged first, so that the
    alternatives never overlap and a Log rule logs a packet once.  A
    negated list is one rule: a plain set of the singles, then each range."""
    if entity.nets:
        yield _any_of(f"{ip} {side}", _net_pieces(entity.nets))
    if entity.not_nets:
        yield (_none_of(f"{ip} {side}", _net_pieces(entity.not_nets)),)
    if entity.selector is not None:
        chains.selectors.add(entity.selector)
        yield (f"{ip} {side} @{set_name(entity.selector, _VERSION[ip])}",)
    if entity.not_selector is not None:
        chains.selectors.add(entity.not_selector)
        yield (f"{ip} {side} != @{set_name(entity.not_selector, _VERSION[ip])}",)
    port = "th sport" if side == "saddr" else "th dport"
    if entity.ports:
        yield _any_of(port, _port_pieces(entity.ports))
    if entity.not_ports:
        yield (_none_of(port, _port_pieces(entity.not_ports)),)


def _net_pieces(nets) -> tuple[list[str], list[str]]:
    """(single addresses, CIDRs) covering the nets, none overlapping."""
    merged = netaddr.cidr_merge(nets)
    return ([str(n.ip) for n in merged if n.size == 1],
            [str(n) for n in merged if n.size > 1])


def _port_pieces(ports) -> tuple[list[str], list[str]]:
    """(single ports, ranges "a-b") covering the ports, none overlapping."""
    merged = []
    for p in sorted(ports, key=lambda p: (p.first, p.last)):
        if merged and p.first <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], p.last)
        else:
            merged.append([p.first, p.last])
    return ([str(a) for a, b in merged if a == b], [f"{a}-{b}" for a, b in merged if a != b])


def _any_of(match: str, pieces: tuple[list[str], list[str]]) -> tuple[str, ...]:
    singles, ranges = pieces
    return tuple(f"{match} {x}" for x in ([_anonymous(singles)] if singles else []) + ranges)


def _none_of(match: str, pieces: tuple[list[str], list[str]]) -> str:
    """A value alone is negated as a range of one: nft 1.0 joins two `!=`
    matches of adjacent fields into one test of both (`th sport != 22 th
    dport != 23` would pass 22 -> 80), which it never does with ranges."""
    singles, ranges = pieces
    if len(singles) == 1:
        singles = [f"{singles[0]}-{singles[0]}"]
    return " ".join(f"{match} != {x}" for x in ([_anonymous(singles)] if singles else []) + ranges)


def _icmp(icmp: str, match, negate: bool) -> str:
    op = "!= " if negate else ""
    if match.code is None:
        return f"{icmp} type {op}{match.type}"
    if negate:  # not (type T and code C), the API's meaning (§6.1 caveat)
        return f"{icmp} type . {icmp} code != {{ {match.type} . {match.code} }}"
    return f"{icmp} type {match.type} {icmp} code {match.code}"


def _anonymous(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"
