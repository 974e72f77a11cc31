"""Calico v3 network policy as this plugin enforces it: a typed model of
Profile and GlobalNetworkPolicy, and their validation.

One set of rules serves two readers:
* the CLI validates before it writes (validate_resource), so `apply` refuses
  anything outside the supported subset with a message naming the field,
  and stores a GlobalNetworkPolicy as calicoctl does (`default.<name>`,
  `types` filled in);
* the agent builds the model from what it reads (profile_from_resource,
  policy_from_resource) and treats an object that raises PolicyError as
  absent, logging the message.

Validation follows calicoctl's v3 validator (shared/reference/calico-policy.md
§1-§2: names are case-sensitive, nets strictly masked, ports only with
TCP/UDP/SCTP, ...).  Beyond that, everything this plugin cannot enforce is
refused by name rather than ignored: HTTP matches, service accounts,
Kubernetes services and namespaces, named ports, other tiers.  Unknown fields are refused too.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple

from netaddr import IPNetwork

from datastore.felix_configuration import FELIX_CONFIGURATION, FelixSettings
from datastore.resources import Resource, valid_name
from datastore.selector import Selector, SelectorError, parse

PROFILE = "Profile"
GLOBAL_NETWORK_POLICY = "GlobalNetworkPolicy"
# Policy kinds Calico has and this plugin does not enforce.
UNSUPPORTED_KINDS = ("NetworkPolicy", "GlobalNetworkSet", "NetworkSet", "Tier",
                     "StagedNetworkPolicy", "StagedGlobalNetworkPolicy",
                     "StagedKubernetesNetworkPolicy")

INGRESS, EGRESS = "Ingress", "Egress"
ACTIONS = ("Allow", "Deny", "Log", "Pass")
PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136}
PORT_PROTOCOLS = (6, 17, 132)  # TCP, UDP, SCTP
DEFAULT_TIER = "default"
TIER_PREFIX = DEFAULT_TIER + "."
PERFORMANCE_HINTS = ("AssumeNeededOnEveryNode",)

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # DNS-1123 label
_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CIDR_RE = re.compile(r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$")
_DIGITS_RE = re.compile(r"^[0-9]+$")
_PORT_RANGE_RE = re.compile(r"^([0-9]+):([0-9]+)$")
_PORT_NAME_RE = re.compile(r"^(?=.*[a-zA-Z])[a-zA-Z0-9_.-]{1,128}$")  # with a letter
_GLOBAL_RE = re.compile(r"global\(\s*\)")
_ANNOTATIONS_MAX_BYTES = 256 * 1024

_NOT_SUPPORTED_NS = ("namespaces are a Kubernetes concept; Docker endpoints are matched by "
                     "labels only, so select them with selector")
_NOT_SUPPORTED_SA = ("service accounts are a Kubernetes concept and Docker endpoints have "
                     "none, so this would match nothing")


class PolicyError(ValueError):
    """An object this plugin will not enforce.  The message reads
    "<Kind> <name>: <field path>: <what is wrong>"; the parts are kept as
    .kind, .name, .path and .reason."""

    def __init__(self, kind: str, name: str, path: str, reason: str):
        super().__init__(f"{kind} {name}: {path}: {reason}")
        self.kind, self.name, self.path, self.reason = kind, name, path, reason


# ---------------------------------------------------------------------------
# The model

@dataclass(frozen=True)
class PortRange:
    first: int
    last: int


@dataclass(frozen=True)
class IcmpMatch:
    type: int
    code: int | None = None


@dataclass(frozen=True)
class EntityRule:
    """One side (source or destination) of a rule.  Empty tuples and None
    mean "no constraint"."""

    nets: tuple[IPNetwork, ...] = ()
    not_nets: tuple[IPNetwork, ...] = ()
    selector: Selector | None = None
    not_selector: Selector | None = None
    ports: tuple[PortRange, ...] = ()
    not_ports: tuple[PortRange, ...] = ()

    def nets_for(self, family: int) -> tuple[tuple[IPNetwork, ...], tuple[IPNetwork, ...]]:
        """(nets, not_nets) keeping only CIDRs of one IP family."""
        return (tuple(n for n in self.nets if n.version == family),
                tuple(n for n in self.not_nets if n.version == family))


class RuleNets(NamedTuple):
    """A rule's four net lists, filtered to one family (Rule.nets_for)."""

    source_nets: tuple[IPNetwork, ...]
    source_not_nets: tuple[IPNetwork, ...]
    destination_nets: tuple[IPNetwork, ...]
    destination_not_nets: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class Rule:
    action: str  # "Allow" | "Deny" | "Log" | "Pass"
    ip_version: int | None = None
    protocol: int | None = None  # IANA number: TCP 6, UDP 17, ICMP 1, ICMPv6 58, ...
    not_protocol: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    source: EntityRule = field(default_factory=EntityRule)
    destination: EntityRule = field(default_factory=EntityRule)

    def families(self) -> tuple[int, ...]:
        """The IP families (4, 6) this rule is rendered in (§2.5, §4.7):
        ipVersion limits it; protocol ICMP (1) means IPv4 only and ICMPv6 (58)
        IPv6 only; and a family is skipped when any non-empty net list has no
        CIDR of that family."""
        families = (4, 6) if self.ip_version is None else (self.ip_version,)
        if self.protocol == PROTOCOLS["ICMP"]:
            families = tuple(f for f in families if f == 4)
        elif self.protocol == PROTOCOLS["ICMPv6"]:
            families = tuple(f for f in families if f == 6)
        for nets in self._net_lists():
            if nets:
                families = tuple(f for f in families if any(n.version == f for n in nets))
        return families

    def nets_for(self, family: int) -> RuleNets:
        """The four net lists with only the CIDRs of one family.  Only
        meaningful for a family in families()."""
        src, src_not = self.source.nets_for(family)
        dst, dst_not = self.destination.nets_for(family)
        return RuleNets(src, src_not, dst, dst_not)

    def for_family(self, family: int) -> Rule | None:
        """This rule as rendered in one family (nets filtered), or None if it
        is skipped there."""
        if family not in self.families():
            return None
        if not any(self._net_lists()):
            return self  # nothing to filter
        nets = self.nets_for(family)
        return replace(
            self,
            source=replace(self.source, nets=nets.source_nets, not_nets=nets.source_not_nets),
            destination=replace(self.destination, nets=nets.destination_nets,
                                not_nets=nets.destination_not_nets))

    def _net_lists(self):
        return (self.source.nets, self.source.not_nets,
                self.destination.nets, self.destination.not_nets)


@dataclass(frozen=True)
class Profile:
    name: str
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    labels_to_apply: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress


# A Profile that exists but cannot be enforced (it denies everything).
INVALID_PROFILE = object()


@dataclass(frozen=True)
class GlobalNetworkPolicy:
    name: str  # the stored name, e.g. default.db: Felix's policy ID
    order: float | None
    selector: Selector
    types: frozenset[str]  # subset of {"Ingress", "Egress"}
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    # Host endpoints only (Felix): before conntrack, allowed packets untracked
    # (doNotTrack); before DNAT, ingress only (preDNAT); also on traffic the
    # host forwards through the endpoint's interface (applyOnForward, which
    # both others need).
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False

    @property
    def sort_key(self) -> tuple:
        """§4.2: ascending order, no order last, ties by policy ID."""
        return (self.order is None, self.order or 0.0, self.name)

    def governs(self, direction: str) -> bool:
        return direction in self.types

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress


# ---------------------------------------------------------------------------
# Names

def storage_name(name: str) -> str:
    """The name a GlobalNetworkPolicy is stored under: default.<name> (§1.2)."""
    return name if name.startswith(TIER_PREFIX) else TIER_PREFIX + name


def display_name(stored: str) -> str:
    """The name calicoctl shows for a stored GlobalNetworkPolicy name."""
    return stored.removeprefix(TIER_PREFIX)


# ---------------------------------------------------------------------------
# Entry points

def profile_from_resource(res: Resource) -> Profile:
    """The Profile res describes; PolicyError if it is invalid or uses
    anything this plugin does not enforce."""
    c = _Checker(PROFILE, res.name)
    if res.kind != PROFILE:
        c.fail("kind", f"expected {PROFILE}, got {res.kind}")
    _check_metadata(c, res)
    if not isinstance(res.name, str) or not valid_name(res.name):
        c.fail("metadata.name", "must be a DNS-1123 subdomain: lower-case letters, digits, "
                                "'-' and '.', starting and ending with a letter or digit, "
                                "at most 253 characters")
    spec = c.mapping("spec", res.spec)
    c.fields("spec", spec, ("ingress", "egress", "labelsToApply"))
    labels = _labels(c, "spec.labelsToApply", spec.get("labelsToApply"))
    return Profile(name=res.name,
                   ingress=_rules(c, "spec.ingress", spec.get("ingress")),
                   egress=_rules(c, "spec.egress", spec.get("egress")),
                   labels_to_apply=MappingProxyType(labels))


def policy_from_resource(res: Resource) -> GlobalNetworkPolicy:
    """The GlobalNetworkPolicy res describes, named by res.name (the stored
    name as read from etcd).  An empty `types` means both directions, as in
    Felix (§1.8).  PolicyError if it is invalid or unsupported."""
    c = _Checker(GLOBAL_NETWORK_POLICY, res.name)
    if res.kind != GLOBAL_NETWORK_POLICY:
        c.fail("kind", f"expected {GLOBAL_NETWORK_POLICY}, got {res.kind}")
    _check_metadata(c, res)
    _check_policy_name(c, res.name)
    spec = c.mapping("spec", res.spec)
    c.fields("spec", spec, ("order", "selector", "types", "ingress", "egress", "doNotTrack",
                            "preDNAT", "applyOnForward", "serviceAccountSelector",
                            "namespaceSelector", "performanceHints", "tier"))
    flags = _host_endpoint_flags(c, spec)
    if _present(spec.get("serviceAccountSelector")):
        c.fail("spec.serviceAccountSelector", "not supported: " + _NOT_SUPPORTED_SA)
    if _present(spec.get("namespaceSelector")):
        c.fail("spec.namespaceSelector", "not supported: " + _NOT_SUPPORTED_NS)
    tier = spec.get("tier")
    if tier not in (None, "", DEFAULT_TIER):
        c.fail("spec.tier", f"only the {DEFAULT_TIER!r} tier is supported, not {tier!r}")
    _performance_hints(c, spec.get("performanceHints"))
    order = spec.get("order")
    if order is not None:
        if isinstance(order, bool) or not isinstance(order, (int, float)) \
                or not math.isfinite(order):
            c.fail("spec.order", f"must be a number, not {order!r}")
        order = float(order)
    types = _types(c, spec.get("types"))
    return GlobalNetworkPolicy(
        name=res.name, order=order,
        selector=_selector(c, "spec.selector", spec.get("selector")) or parse("all()"),
        types=frozenset(types or (INGRESS, EGRESS)),
        ingress=_rules(c, "spec.ingress", spec.get("ingress")),
        egress=_rules(c, "spec.egress", spec.get("egress")), **flags)


def _host_endpoint_flags(c: _Checker, spec: dict) -> dict[str, bool]:
    """doNotTrack, preDNAT and applyOnForward, with calicoctl's rules."""
    flags = {}
    for flag, field_name in (("doNotTrack", "do_not_track"), ("preDNAT", "pre_dnat"),
                             ("applyOnForward", "apply_on_forward")):
        value = spec.get(flag)
        if value is not None and not isinstance(value, bool):
            c.fail(f"spec.{flag}", "must be true or false")
        flags[field_name] = bool(value)
    if flags["do_not_track"] and flags["pre_dnat"]:
        c.fail("spec.preDNAT", "preDNAT and doNotTrack cannot both be true")
    if (flags["do_not_track"] or flags["pre_dnat"]) and not flags["apply_on_forward"]:
        c.fail("spec.applyOnForward", "applyOnForward must be true if either preDNAT or "
                                      "doNotTrack is true")
    if flags["pre_dnat"] and spec.get("egress"):
        c.fail("spec.egress", "preDNAT policy cannot have any egress rules")
    if flags["pre_dnat"] and EGRESS in (spec.get("types") or ()):
        c.fail("spec.types", "preDNAT policy cannot have 'Egress' type")
    return flags


def validate_resource(res: Resource) -> Resource:
    """For the CLI, before it writes res: PolicyError if res is a policy
    object this plugin will not enforce.  A GlobalNetworkPolicy comes back as
    a copy named default.<name> with `types` filled in as calicoctl does
    (§1.8); a Profile comes back unchanged, and so does a valid HostEndpoint
    or a FelixConfiguration whose fields the agent reads are valid
    (FelixConfigurationError if not).  Other kinds that are not policy
    (IPPool, ...) are returned unchanged; NetworkPolicy, network sets and
    tiers are refused."""
    from datastore.host_endpoint import HOST_ENDPOINT, host_endpoint_from_resource  # builds on us
    if res.kind == HOST_ENDPOINT:
        host_endpoint_from_resource(res)
        return res
    if res.kind == PROFILE:
        profile_from_resource(res)
        return res
    if res.kind == FELIX_CONFIGURATION:
        FelixSettings.from_resource(res)
        return res
    if res.kind in UNSUPPORTED_KINDS:
        raise PolicyError(res.kind, res.name, "kind",
                          "not supported by this plugin; use Profiles and GlobalNetworkPolicies")
    if res.kind != GLOBAL_NETWORK_POLICY:
        return res
    out = copy.deepcopy(res)
    if isinstance(out.spec, dict) and not out.spec.get("types"):
        out.spec["types"] = default_types(out.spec)
    policy_from_resource(out)  # messages name the policy as given
    out.name = storage_name(res.name)
    return out


def default_types(spec: Mapping) -> list[str]:
    """`types` as the client fills it in when it is empty (§1.8): Egress only
    for a policy with egress rules and no ingress rules, both when it has
    both, otherwise Ingress."""
    if not spec.get("egress"):
        return [INGRESS]
    if not spec.get("ingress"):
        return [EGRESS]
    return [INGRESS, EGRESS]


def policy_warnings(res: Resource) -> list[str]:
    """Things about a valid object that are legal but probably not meant
    (for the CLI to print and the agent to log)."""
    found = []
    spec = res.spec if isinstance(res.spec, dict) else {}
    if res.kind == PROFILE and res.metadata.get("labels"):
        found.append(f"{PROFILE} {res.name}: metadata.labels are not inherited by endpoints; "
                     "put the labels to give them in spec.labelsToApply")
    if res.kind == GLOBAL_NETWORK_POLICY:
        types = spec.get("types") or []
        if not types:
            found.append(f"{GLOBAL_NETWORK_POLICY} {res.name}: spec.types is empty, so the "
                         "policy governs both Ingress and Egress; a direction without rules "
                         "then drops everything")
        for direction, key in ((INGRESS, "ingress"), (EGRESS, "egress")):
            if types and direction not in types and spec.get(key):
                found.append(f"{GLOBAL_NETWORK_POLICY} {res.name}: spec.{key} has rules but "
                             f"spec.types lacks {direction}, so they are never used")
    return found


# ---------------------------------------------------------------------------
# Validation helpers

class _Checker:
    """Knows which object it judges, to word every PolicyError the same way."""

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name

    def fail(self, path: str, reason: str):
        raise PolicyError(self.kind, self.name, path, reason)

    def mapping(self, path: str, value) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {_type_name(value)}")
        return value

    def sequence(self, path: str, value) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, not {_type_name(value)}")
        return value

    def fields(self, path: str, obj: dict, known):
        for key in obj:
            if key not in known:
                hint = next((k for k in known if isinstance(key, str) and k.lower() == key.lower()),
                            None)
                self.fail(f"{path}.{key}", "unknown field" +
                          (f"; did you mean {hint!r}? (field names are case-sensitive)"
                           if hint else ""))


def _type_name(value) -> str:
    return {bool: "true/false", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _present(value) -> bool:
    return value not in (None, "", [], {})


def _check_metadata(c: _Checker, res: Resource):
    if not res.name:
        c.fail("metadata.name", "is required")
    if res.namespace:
        c.fail("metadata.namespace", f"{c.kind} is not namespaced")


def _check_policy_name(c: _Checker, name: str):
    """A DNS-1123 label, optionally already stored as default.<label>."""
    shown = display_name(name)
    tier, dot, rest = shown.partition(".")
    if dot and _LABEL_RE.match(tier) and _LABEL_RE.match(rest):
        c.fail("metadata.name", f"tier {tier!r} is not supported, only {DEFAULT_TIER!r}: "
                                f"a name has no '.' other than the {TIER_PREFIX!r} prefix")
    if len(name) > 253 or not _LABEL_RE.match(shown):
        c.fail("metadata.name", "must be a DNS-1123 label: lower-case letters, digits and "
                                "'-', starting and ending with a letter or digit, "
                                "at most 253 characters")


def _qualified_name_problem(key) -> str | None:
    """Why key is not a Kubernetes qualified name (label key), or None."""
    if not isinstance(key, str) or not key:
        return "a label key must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if key.count("/") > 1:
            return "a label key has at most one '/'"
        if not prefix or not valid_name(prefix):
            return ("the prefix before '/' must be a DNS-1123 subdomain (lower-case "
                    "letters, digits, '-' and '.'), at most 253 characters")
    if len(name) > 63 or not _QUALIFIED_NAME_RE.match(name):
        return ("the name part must be at most 63 characters: letters, digits, '-', '_' "
                "and '.', starting and ending with a letter or digit")
    return None


def _labels(c: _Checker, path: str, value) -> dict[str, str]:
    labels = c.mapping(path, value)
    for key, val in labels.items():
        problem = _qualified_name_problem(key)
        if problem:
            c.fail(f"{path}.{key}", problem)
        if not isinstance(val, str):
            c.fail(f"{path}.{key}", f"the value must be a string, not {_type_name(val)}; "
                                    "quote it in YAML (e.g. \"true\")")
        if val and (len(val) > 63 or not _QUALIFIED_NAME_RE.match(val)):
            c.fail(f"{path}.{key}", f"invalid label value {val!r}: at most 63 characters, "
                                    "letters, digits, '-', '_' and '.', starting and ending "
                                    "with a letter or digit (or empty)")
    return dict(labels)


def _types(c: _Checker, value) -> list[str]:
    types = c.sequence("spec.types", value)
    for i, t in enumerate(types):
        if t not in (INGRESS, EGRESS):
            hint = next((v for v in (INGRESS, EGRESS)
                         if isinstance(t, str) and t.lower() == v.lower()), None)
            c.fail(f"spec.types[{i}]", f"{t!r} is not a policy type; " +
                   (f"write {hint!r} (types are case-sensitive)" if hint
                    else "use Ingress or Egress"))
        if t in types[:i]:
            c.fail(f"spec.types[{i}]", f"{t!r} is listed twice")
    return types


def _performance_hints(c: _Checker, value):
    hints = c.sequence("spec.performanceHints", value)
    for i, hint in enumerate(hints):
        if hint not in PERFORMANCE_HINTS:
            c.fail(f"spec.performanceHints[{i}]",
                   f"{hint!r} is not a performance hint; the only one is {PERFORMANCE_HINTS[0]}")
        if hint in hints[:i]:
            c.fail(f"spec.performanceHints[{i}]", f"{hint!r} is listed twice")


def _selector(c: _Checker, path: str, value) -> Selector | None:
    """The parsed selector, or None when it is absent or empty."""
    if value is None:
        return None
    if not isinstance(value, str):
        c.fail(path, f"must be a selector string, not {_type_name(value)}")
    if not value.strip():
        return None
    if _GLOBAL_RE.search(value):
        c.fail(path, "global() may only be used in a namespaceSelector, which this plugin "
                     "does not support")
    try:
        return parse(value)
    except SelectorError as exc:
        c.fail(path, str(exc))


def _rules(c: _Checker, path: str, value) -> tuple[Rule, ...]:
    return tuple(_rule(c, f"{path}[{i}]", r) for i, r in enumerate(c.sequence(path, value)))


def _rule(c: _Checker, path: str, value) -> Rule:
    r = c.mapping(path, value)
    if _present(r.get("http")):
        c.fail(f"{path}.http", "HTTP matches are not enforced by this plugin (Felix needs an "
                               "application-layer proxy for them); remove http")
    c.fields(path, r, ("action", "ipVersion", "protocol", "notProtocol", "icmp", "notICMP",
                       "source", "destination", "metadata", "http"))
    _rule_metadata(c, f"{path}.metadata", r.get("metadata"))

    action = r.get("action")
    if action not in ACTIONS:
        if action is None or action == "":
            c.fail(f"{path}.action", "is required: Allow, Deny, Log or Pass")
        hint = next((a for a in ACTIONS
                     if isinstance(action, str) and a.lower() == action.lower()), None)
        c.fail(f"{path}.action", f"{action!r} is not an action; " +
               (f"write {hint!r} (actions are case-sensitive)" if hint
                else "use Allow, Deny, Log or Pass"))

    ip_version = r.get("ipVersion")
    if ip_version is not None and (type(ip_version) is not int or ip_version not in (4, 6)):
        c.fail(f"{path}.ipVersion", f"must be 4 or 6, not {ip_version!r}")

    protocol, protocol_name = _protocol(c, f"{path}.protocol", r.get("protocol"))
    not_protocol, not_protocol_name = _protocol(c, f"{path}.notProtocol", r.get("notProtocol"))
    icmp = _icmp(c, f"{path}.icmp", r.get("icmp"))
    not_icmp = _icmp(c, f"{path}.notICMP", r.get("notICMP"))
    source = _entity_rule(c, f"{path}.source", r.get("source"))
    destination = _entity_rule(c, f"{path}.destination", r.get("destination"))

    # §2.3, in calicoctl's terms.
    for side, entity in (("source", source), ("destination", destination)):
        for key, ports in (("ports", entity.ports), ("notPorts", entity.not_ports)):
            if ports and protocol not in PORT_PROTOCOLS:
                c.fail(f"{path}.{side}.{key}",
                       "ports need protocol TCP, UDP or SCTP (or 6, 17, 132); this rule has " +
                       ("no protocol" if protocol is None
                        else f"protocol {protocol_name or protocol}"))
    for key in ("icmp", "notICMP"):
        if r.get(key) is not None and protocol_name not in ("ICMP", "ICMPv6"):
            c.fail(f"{path}.{key}", f"{key} needs protocol ICMP or ICMPv6, written by name; "
                   "this rule has " + ("no protocol" if protocol is None
                                       else f"protocol {r.get('protocol')!r}"))
    for name, version in (("ICMP", 4), ("ICMPv6", 6)):
        if name in (protocol_name, not_protocol_name) and ip_version not in (None, version):
            c.fail(f"{path}.ipVersion", f"protocol {name} needs ipVersion {version} "
                                        f"(or no ipVersion), not {ip_version}")
    seen = set()
    for side, entity in (("source", source), ("destination", destination)):
        for key, nets in (("nets", entity.nets), ("notNets", entity.not_nets)):
            versions = {n.version for n in nets}
            if ip_version is not None and versions - {ip_version}:
                c.fail(f"{path}.{side}.{key}",
                       f"holds IPv{(versions - {ip_version}).pop()} CIDRs but the rule has "
                       f"ipVersion {ip_version}")
            seen |= versions
            if len(seen) > 1:
                c.fail(f"{path}.{side}.{key}", "a rule cannot mix IPv4 and IPv6 CIDRs; "
                                               "write one rule for each")

    return Rule(action=action, ip_version=ip_version, protocol=protocol,
                not_protocol=not_protocol, icmp=icmp, not_icmp=not_icmp,
                source=source, destination=destination)


def _rule_metadata(c: _Checker, path: str, value):
    """Rule annotations are accepted (Felix only turns them into comments)."""
    meta = c.mapping(path, value)
    c.fields(path, meta, ("annotations",))
    annotations = c.mapping(f"{path}.annotations", meta.get("annotations"))
    size = 0
    for key, val in annotations.items():
        problem = _qualified_name_problem(key)
        if problem:
            c.fail(f"{path}.annotations.{key}", problem.replace("label key", "key"))
        if not isinstance(val, str):
            c.fail(f"{path}.annotations.{key}", f"must be a string, not {_type_name(val)}")
        size += len(key.encode()) + len(val.encode())
    if size > _ANNOTATIONS_MAX_BYTES:
        c.fail(f"{path}.annotations", f"total size {size} bytes exceeds 256 KiB")


def _protocol(c: _Checker, path: str, value) -> tuple[int | None, str | None]:
    """(IANA number, name as written or None if written as a number)."""
    if value is None:
        return None, None
    if isinstance(value, str) and value in PROTOCOLS:
        return PROTOCOLS[value], value
    if isinstance(value, str) and _DIGITS_RE.match(value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        hint = next((p for p in PROTOCOLS if p.lower() == value.lower()), None)
        c.fail(path, f"{value!r} is not a protocol; " +
               (f"write {hint!r} (protocol names are case-sensitive)" if hint else
                "use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255"))
    else:
        c.fail(path, f"must be a protocol name or number, not {_type_name(value)}")
    if not 1 <= number <= 255:
        c.fail(path, f"protocol number {number} is out of range 1-255")
    return number, None


def _icmp(c: _Checker, path: str, value) -> IcmpMatch | None:
    """An ICMP type/code match; None when absent or empty (matches any)."""
    icmp = c.mapping(path, value)
    c.fields(path, icmp, ("type", "code"))
    bounds = {"type": 254, "code": 255}
    for key, top in bounds.items():
        v = icmp.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                              or not 0 <= v <= top):
            c.fail(f"{path}.{key}", f"must be a number 0-{top}, not {v!r}")
    if icmp.get("code") is not None and icmp.get("type") is None:
        c.fail(f"{path}.code", "an ICMP code needs an ICMP type")
    if icmp.get("type") is None:
        return None
    return IcmpMatch(type=icmp["type"], code=icmp.get("code"))


def _entity_rule(c: _Checker, path: str, value) -> EntityRule:
    e = c.mapping(path, value)
    if _present(e.get("namespaceSelector")):
        c.fail(f"{path}.namespaceSelector", "not supported: " + _NOT_SUPPORTED_NS)
    if e.get("serviceAccounts") is not None:
        c.fail(f"{path}.serviceAccounts", "not supported: " + _NOT_SUPPORTED_SA)
    if e.get("services") is not None:
        c.fail(f"{path}.services", "not supported: Kubernetes Services do not exist for "
                                   "Docker workloads; match their addresses with nets or "
                                   "selector")
    c.fields(path, e, ("nets", "notNets", "selector", "notSelector", "ports", "notPorts",
                       "namespaceSelector", "serviceAccounts", "services"))
    return EntityRule(
        nets=_nets(c, f"{path}.nets", e.get("nets")),
        not_nets=_nets(c, f"{path}.notNets", e.get("notNets")),
        selector=_selector(c, f"{path}.selector", e.get("selector")),
        not_selector=_selector(c, f"{path}.notSelector", e.get("notSelector")),
        ports=_ports(c, f"{path}.ports", e.get("ports")),
        not_ports=_ports(c, f"{path}.notPorts", e.get("notPorts")))


def _nets(c: _Checker, path: str, value) -> tuple[IPNetwork, ...]:
    return tuple(_net(c, f"{path}[{i}]", n) for i, n in enumerate(c.sequence(path, value)))


def _net(c: _Checker, path: str, text) -> IPNetwork:
    """A strictly masked CIDR; a bare address means /32 or /128."""
    if not isinstance(text, str):
        c.fail(path, f"must be a CIDR string such as 10.0.0.0/8, not {_type_name(text)}")
    try:
        if not _CIDR_RE.match(text):
            raise ValueError(text)
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False) if _CIDR_RE.match(text) else None
        except ValueError:
            loose = None
        if loose is None:
            c.fail(path, f"{text!r} is not a CIDR or IP address")
        c.fail(path, f"{text!r} has bits set past its prefix length; write {loose} "
                     "(CIDRs must be strictly masked)")
    return IPNetwork(str(net))


def _ports(c: _Checker, path: str, value) -> tuple[PortRange, ...]:
    return tuple(_port(c, f"{path}[{i}]", p) for i, p in enumerate(c.sequence(path, value)))


def _port(c: _Checker, path: str, value) -> PortRange:
    """A port number, or a range "a:b" (§2.4).  Named ports are refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str) and _DIGITS_RE.match(value):
        first = last = int(value)
    elif isinstance(value, str) and _PORT_RANGE_RE.match(value):
        m = _PORT_RANGE_RE.match(value)
        first, last = int(m.group(1)), int(m.group(2))
    elif isinstance(value, str) and _PORT_NAME_RE.match(value):
        c.fail(path, f"{value!r} is a named port; only numbers and ranges such as "
                     "8000:8080 are supported")
    else:
        c.fail(path, f"{value!r} is not a port; only numbers and ranges such as "
                     "8000:8080 are supported")
    for port in (first, last):
        if not 1 <= port <= 65535:
            c.fail(path, f"port {port} is out of range 1-65535")
    if first > last:
        c.fail(path, f"range {value!r} is reversed; write {last}:{first}")
    return PortRange(first, last)
