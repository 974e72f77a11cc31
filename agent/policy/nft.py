"""Our nftables table: written whole in one transaction the first time (and
after any failure), then changed by the difference only: set elements added
and removed, changed chains flushed and refilled, all in one transaction
(agent/nftables.py), so the kernel never holds a half-written ruleset.
Elements alone, or with chains whose every rule agent/nft_expressions.py
encodes (a policy's rules changed), go over nfnetlink; the rest is a
libnftables script.

The base chains see every forwarded packet and every packet a workload
sends to its host.  A drop in them is final; an accept only ends our table,
so dockerd's FORWARD rules still run for what we allow (and accept it in
CALICO-LIBNETWORK-FWD).  Host-to-workload traffic is not filtered (Felix's
OUTPUT exemption), and replies pass through conntrack.

A workload's packet to its own host goes to wl-to-host, as in Felix
(felix/rules/static.go): IPv6 neighbour discovery and our DNS responder
first, then the workload's egress policy, then DefaultEndpointToHostAction:
Drop, Accept, or Return (back out of our input chain, on to the host's own
rules).  In nftables an accept ends only our table, so Accept and Return
differ only in what our input chain would still check after it.

What the host itself receives and sends on other interfaces meets this
node's host endpoints (felix/rules/static.go, dispatch.go): after VXLAN
and IPIP, which tunnels.py's chains admit from the Calico hosts first (and
drop from others while in use), and the workloads' own traffic, from-hep
and to-hep send it by interface to its host endpoint's chain, else to the
"*" endpoint's, else it passes.  Forwarded traffic meets from-hep-fwd before the workload
chains (unless a preDNAT or doNotTrack policy allowed it) and to-hep-fwd
after them.  preDNAT policy runs in a prerouting chain at mangle priority,
before DNAT; doNotTrack policy in prerouting and output chains at raw
priority, before conntrack, which first clear our mark bits (Felix's raw
chains do); those hooks are ours only while such policies apply here
(base_chains).  Workload interfaces are never host endpoint policy's, except
in forward chains of the "*" endpoint, as in Felix.
"""

import logging
import re
from dataclasses import dataclass, field

from agent.nft_expressions import Rule, encode
from agent.nftables import INTERFACE_MAP, inet_elements, inet_rules, interface_element, run
from agent.policy.compiler import (ACCEPTED, CLEAR_MARKS, FAILSAFE_IN, FAILSAFE_OUT,
                                   HOST_DISPATCH, ND_TYPES, NOT_ACCEPTED, RAW_FAILSAFE_IN,
                                   RAW_FAILSAFE_OUT, VXLAN_PORT, Chains)
from agent.policy.tunnels import TUNNELS_IN, TUNNELS_OUT
from datastore.felix_configuration import ProtoPort
from datastore.host_endpoint import ALL_INTERFACES
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

TABLE = "calico-libnetwork"
FAMILY = "inet"
SET_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}  # our address sets' by IP version
FROM_WL_MAP, TO_WL_MAP = "from-wl-chains", "to-wl-chains"
# `nft list table` text: each set's block, and its elements in it
_SET = re.compile(r"^\tset (\S+) \{\n(.*?)^\t\}", re.M | re.S)
_ELEMENTS = re.compile(r"elements = \{([^}]*)\}")
_TABLE_BLOCK = re.compile(rf"^table {FAMILY} {TABLE} \{{\n(.*?)^\}}", re.M | re.S)
# More elements changed at once go through libnftables: one transaction of
# ours stays a few netlink messages.
_ELEMENTS_AT_ONCE = 2000


@dataclass
class Ruleset:
    """Everything in our table but its fixed base chains."""

    # set name -> (nft type, members)
    sets: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> rules
    # verdict map name -> (nft type, elements '"<interface>" : goto <chain>'):
    # written after the chains they name
    maps: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    # base chain name -> (its hook, its rules): base_chains()
    base: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # set name -> (the members it was made from, members added, removed):
    # what changed, known where it was made, used when the ruleset
    # programmed holds those very members (not a copy of them)
    moves: dict[str, tuple[frozenset[str], frozenset[str], frozenset[str]]] = field(
        default_factory=dict, compare=False)

    @staticmethod
    def workload_maps(chains: Chains, before: tuple[Chains, dict] | None = None
                      ) -> dict[str, tuple[str, frozenset[str]]]:
        """Each local workload's interface -> its chain, per direction: a
        container coming or going changes one element of each, not a chain
        listing every interface.  before: the chains and maps last made,
        changed by the interfaces that moved rather than made anew."""
        maps = {}
        for name, direction in ((FROM_WL_MAP, "egress"), (TO_WL_MAP, "ingress")):
            now = getattr(chains, direction)
            if before is None:
                maps[name] = (INTERFACE_MAP, frozenset(map(_element, now.items())))
                continue
            then = getattr(before[0], direction)
            moved = {i for i, c in now.items() if then.get(i) != c} | (then.keys() - now.keys())
            maps[name] = (INTERFACE_MAP, before[1][name][1].difference(
                _element((i, then[i])) for i in moved if i in then).union(
                _element((i, now[i])) for i in moved if i in now))
        return maps

    @staticmethod
    def dispatch(chains: Chains, endpoint_to_host_action: str,
                 failsafe_in: tuple[ProtoPort, ...],
                 failsafe_out: tuple[ProtoPort, ...]) -> dict[str, tuple[str, ...]]:
        """The chains that send a packet to its endpoint's chain by interface
        (any other cali interface, not ours or not programmed yet, drops),
        wl-to-host, and the host endpoints' dispatch and failsafe chains."""
        return {"from-wl": _dispatch("iifname", FROM_WL_MAP),
                "to-wl": _dispatch("oifname", TO_WL_MAP),
                "wl-to-host": _workload_to_host(endpoint_to_host_action),
                **{name: _host_dispatch("iifname" if "from" in name else "oifname",
                                        chains.host.get(name, {}))
                   for name in HOST_DISPATCH},
                **_failsafe_chains(failsafe_in, failsafe_out)}


def _element(interface_chain: tuple[str, str]) -> str:
    return interface_element(*interface_chain)


def _host_dispatch(match: str, chains: dict[str, str]) -> tuple[str, ...]:
    """By interface to its host endpoint's chain, else to the "*" one's,
    else back: no host endpoint, no host endpoint policy."""
    named = sorted((i, c) for i, c in chains.items() if i != ALL_INTERFACES)
    rules = []
    if named:
        vmap = ", ".join(interface_element(iface, chain) for iface, chain in named)
        rules.append(f"{match} vmap {{ {vmap} }}")
    if ALL_INTERFACES in chains:
        rules.append(f"goto {chains[ALL_INTERFACES]}")
    return tuple(rules)


def _failsafe_chains(inbound, outbound) -> dict[str, tuple[str, ...]]:
    """Felix's failsafe chains: the raw ones, before conntrack, also pass
    the replies by source port."""
    ins = tuple(_failsafe(p, "saddr", "dport") for p in inbound)
    outs = tuple(_failsafe(p, "daddr", "dport") for p in outbound)
    return {FAILSAFE_IN: ins, FAILSAFE_OUT: outs,
            RAW_FAILSAFE_IN: ins + tuple(_failsafe(p, "saddr", "sport") for p in outbound),
            RAW_FAILSAFE_OUT: outs + tuple(_failsafe(p, "daddr", "sport") for p in inbound)}


def _failsafe(port: ProtoPort, side: str, port_side: str) -> str:
    """Accept one failsafe port; the peer's net is matched on `side`."""
    peer = "" if port.net is None else f"{'ip' if port.family == 4 else 'ip6'} {side} {port.net} "
    return f"{peer}{port.protocol} {port_side} {port.port} accept"


def _dispatch(match: str, interface_map: str) -> tuple[str, ...]:
    return ("ct state established,related accept", "ct state invalid drop",
            f"{match} vmap @{interface_map}", "drop")


def _workload_to_host(action: str) -> tuple[str, ...]:
    return (f"icmpv6 type {ND_TYPES} accept",
            # DNS to the agent's responder, asked directly or redirected
            # there (agent/names): names resolve whatever the egress rules.
            "ip daddr 169.254.1.1 meta l4proto { tcp, udp } ct original proto-dst 53 accept",
            "ip6 daddr fe80::1 meta l4proto { tcp, udp } ct original proto-dst 53 accept",
            "jump from-wl",  # the workload's egress policy: drops, or returns allowed
            *_HOST_ACTIONS[action])


# DefaultEndpointToHostAction -> the end of wl-to-host; Return adds nothing.
_HOST_ACTIONS = {"Drop": ("drop",), "Accept": ("accept",), "Return": ()}

_PRIORITY = "type filter hook {} priority {}; policy accept;"


def base_chains(chains: Chains) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Our chains on the netfilter hooks: name -> (hook, rules).  Each hook
    costs every packet a visit, so the raw and mangle ones are there only
    while a host endpoint has doNotTrack or preDNAT policies, the only
    policies that decide before the filter hooks; the accept mark they set
    (and that the raw chains first clear) is read only while they are.
    Established flows are accepted at once: every chain below would accept
    them first."""
    pre_dnat = bool(chains.host.get("mangle-from-hep"))
    marks = pre_dnat or any(chains.host.get(name) for name in ("raw-from-hep", "raw-to-hep"))
    base = {}
    if marks:
        base["raw-prerouting"] = (_PRIORITY.format("prerouting", "raw"), (
            CLEAR_MARKS, 'iifname "cali*" accept', "jump raw-from-hep"))
        base["raw-output"] = (_PRIORITY.format("output", "raw"), (
            CLEAR_MARKS, "jump raw-to-hep"))
    if pre_dnat:
        base["mangle-prerouting"] = (_PRIORITY.format("prerouting", "mangle"), (
            "ct state established,related accept", f"{ACCEPTED} accept",
            'iifname "cali*" accept',  # workloads: never host endpoint policy
            "jump mangle-from-hep"))
    accepted = (f"{ACCEPTED} accept",) if marks else ()  # by a preDNAT or doNotTrack policy
    base["forward"] = (_PRIORITY.format("forward", "filter"), (
        "ct state established,related accept",
        f"{NOT_ACCEPTED} jump from-hep-fwd" if marks else "jump from-hep-fwd",
        'iifname "cali*" jump from-wl', 'oifname "cali*" jump to-wl',
        "jump to-hep-fwd"))
    base["input"] = (_PRIORITY.format("input", "filter"), (
        f"jump {TUNNELS_IN}",  # first, as Felix: no Allow admits forged tunnels
        'iifname "cali*" goto wl-to-host',
        *accepted,
        "jump from-hep"))
    base["output"] = (_PRIORITY.format("output", "filter"), (
        *accepted,
        'oifname "cali*" accept',  # to this host's workloads: not filtered
        f"udp dport {VXLAN_PORT} accept",
        f"jump {TUNNELS_OUT}",
        "jump to-hep"))
    return base


class PolicyTable:
    """Our policy table in the kernel, and the ruleset last written to it."""

    def __init__(self):
        self.programmed: Ruleset | None = None  # None: write the whole table next

    def program(self, desired: Ruleset) -> None:
        try:
            if self.programmed is None:
                run(full_script(desired))
            elif (changes := element_changes(self.programmed, desired)) is not None:
                if changes:
                    inet_elements(TABLE, changes)
            elif (refill := rule_changes(self.programmed, desired)) is not None:
                inet_rules(TABLE, *refill)
            elif script := diff_script(self.programmed, desired):
                run(script)
        except KernelError:
            self.programmed = None
            raise
        self.programmed = desired

    def present(self) -> bool:
        try:
            run(f"list chain {FAMILY} {TABLE} forward\n")
            return True
        except KernelError:
            return False

    def sets(self) -> dict[str, frozenset[str]] | None:
        """The sets in the kernel's table and their elements; None when
        there is no table (or one without sets: ours always has the
        Calico hosts' sets)."""
        # The sets of every inet table (without the chains: a thousand
        # endpoints' chains take nft a second to list), then ours.
        listing = run(f"list sets {FAMILY}\n")
        ours = _TABLE_BLOCK.search(listing)
        if ours is None:
            return None
        found = {}
        for name, body in _SET.findall(ours.group(1)):
            elements = _ELEMENTS.search(body)
            found[name] = frozenset(e for e in re.split(r"[\s,]+", elements.group(1)) if e) \
                if elements else frozenset()
        return found

    def remove(self) -> None:
        """Delete our table (and with it every rule and set); safe to repeat."""
        self.programmed = None
        run(f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")


def full_script(desired: Ruleset) -> str:
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t}", f"delete table {t}", f"add table {t}"]
    for name, (kind, members) in sorted(desired.sets.items()):
        lines.append(f"add set {t} {name} {{ type {kind}; }}")
        lines.extend(_elements("add", t, name, members))
    chains = sorted(desired.chains)
    lines.extend(f"add chain {t} {name}" for name in chains)
    for name, (kind, members) in sorted(desired.maps.items()):
        lines.append(f"add map {t} {name} {{ type {kind}; }}")
        lines.extend(_elements("add", t, name, members))
    for name in chains:
        lines.extend(f"add rule {t} {name} {rule}" for rule in desired.chains[name])
    for name, (hook, rules) in desired.base.items():
        lines.append(f"add chain {t} {name} {{ {hook} }}")
        lines.extend(f"add rule {t} {name} {rule}" for rule in rules)
    return "\n".join(lines) + "\n"


def element_changes(old: Ruleset, new: Ruleset
                    ) -> list[tuple[str, str, frozenset[str], frozenset[str]]] | None:
    """(set or map, its type, elements added, elements removed) of each address set
    and interface map that changed, when that is all that changed and not
    much of it (agent/nftables.py inet_elements takes it); else None."""
    if not (_same(old.chains, new.chains) and _same(old.base, new.base)):
        return None
    return _element_deltas(old, new)


def _same(old, new) -> bool:
    return old is new or old == new  # most often the very object: no need to look inside


def rule_changes(old: Ruleset, new: Ruleset
                 ) -> tuple[list[tuple[str, str, frozenset[str], frozenset[str]]],
                            dict[str, list[Rule]]] | None:
    """element_changes' elements, and each changed chain's rules as
    expressions, when the chains, sets and maps are the same ones and
    every rule of a changed chain encodes (agent/nftables.py inet_rules
    takes them); else None."""
    if not _same(old.base, new.base) or old.chains.keys() != new.chains.keys():
        return None
    changes = _element_deltas(old, new)
    if changes is None:
        return None
    chains = {}
    for name, rules in new.chains.items():
        before = old.chains[name]
        if _same(before, rules):
            continue
        chains[name] = [encode(rule) for rule in rules]
        if None in chains[name]:
            return None
    return changes, chains


def _element_deltas(old: Ruleset, new: Ruleset
                    ) -> list[tuple[str, str, frozenset[str], frozenset[str]]] | None:
    """What element_changes returns, whatever the chains."""
    if old.sets.keys() != new.sets.keys() or old.maps.keys() != new.maps.keys():
        return None
    changes, count = [], 0
    for name, (kind, members) in new.sets.items():
        before_kind, before = old.sets[name]
        if before is members:
            continue
        if kind != before_kind or kind not in SET_TYPES.values():
            return None
        move = new.moves.get(name)
        if move is not None and move[0] is before:
            _, added, removed = move
        elif before == members:
            continue
        else:
            added, removed = members - before, before - members
        count += len(added) + len(removed)
        changes.append((name, kind, added, removed))
    for name, (kind, elements) in new.maps.items():
        before_kind, before = old.maps[name]
        if _same(before, elements):
            continue
        if kind != before_kind or kind != INTERFACE_MAP:
            return None
        added, removed = elements - before, before - elements
        count += len(added) + len(removed)
        changes.append((name, kind, added, removed))
    return changes if count <= _ELEMENTS_AT_ONCE else None


def diff_script(old: Ruleset, new: Ruleset) -> str:
    """In an order nft accepts: a map's element leaves before the chain it
    names, or before a new element of the same interface; a new element
    comes after its new chain."""
    t = f"{FAMILY} {TABLE}"
    added = sorted(set(new.chains) - set(old.chains))
    removed = sorted(set(old.chains) - set(new.chains))
    changed = sorted(n for n, rules in new.chains.items()
                     if n in old.chains and not _same(old.chains[n], rules))
    lines = _members_diff(t, "set", old.sets, new.sets, "delete")
    lines += _members_diff(t, "map", old.maps, new.maps, "delete")
    lines.extend(f"add chain {t} {name}" for name in added)
    for name in changed + removed:
        lines.append(f"flush chain {t} {name}")
    lines += _members_diff(t, "set", old.sets, new.sets, "add")
    lines += _members_diff(t, "map", old.maps, new.maps, "add")
    for name in changed + added:
        lines.extend(f"add rule {t} {name} {rule}" for rule in new.chains[name])
    lines.extend(f"delete {kind} {t} {name}" for kind, held, now in (
        ("map", old.maps, new.maps), ("set", old.sets, new.sets)) for name in sorted(held)
        if name not in now)
    for name, (hook, rules) in new.base.items():  # after the chains they jump to
        before = old.base.get(name)
        if before != (hook, rules):
            lines.append(f"add chain {t} {name} {{ {hook} }}" if before is None
                         else f"flush chain {t} {name}")
            lines.extend(f"add rule {t} {name} {rule}" for rule in rules)
    lines.extend(f"delete chain {t} {name}" for name in old.base if name not in new.base)
    lines.extend(f"delete chain {t} {name}" for name in removed)
    return "\n".join(lines) + "\n" if lines else ""


def _members_diff(t: str, kind: str, old: dict, new: dict, verb: str) -> list[str]:
    """The elements to add to (verb "add", with the new sets or maps
    themselves) or delete from (verb "delete") each set or map."""
    lines = []
    for name, (nft_type, members) in sorted(new.items()):
        before = old.get(name)
        if before is None:
            if verb == "add":
                lines.append(f"add {kind} {t} {name} {{ type {nft_type}; }}")
                lines.extend(_elements("add", t, name, members))
        elif not _same(before[1], members):
            lines.extend(_elements(verb, t, name, members - before[1] if verb == "add"
                                   else before[1] - members))
    return lines


def _elements(verb: str, table: str, name: str, members) -> list[str]:
    members = sorted(members)
    # Bounded statements: nft parses one huge line slowly.
    return [f"{verb} element {table} {name} {{ {', '.join(members[i:i + 1000])} }}"
            for i in range(0, len(members), 1000)]

