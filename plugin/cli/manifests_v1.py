"""calicoctl v1 manifests (`apiVersion: v1`), as older Calico Docker docs show
them, converted to v3 objects the way Calico's v1->v3 upgrade converter does
(libcalico-go lib/upgrade/converters @release-v3.1): `ipPool` and `profile`.
Selectors are copied as written; tags become labels and selectors.
"""

import hashlib
import re

from netaddr import AddrFormatError, IPNetwork

from datastore.resources import API_VERSION
from plugin.cli.errors import CommandError

V1_API_VERSION = "v1"

_ACTIONS = {"allow": "Allow", "deny": "Deny", "log": "Log", "pass": "Pass",
            "next-tier": "Pass"}
_PROTOCOLS = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmpv6": "ICMPv6",
              "sctp": "SCTP", "udplite": "UDPLite"}


def cidr_to_name(cidr: IPNetwork) -> str:
    """The name the converter gives a pool: 10.77.0.0/16 -> 10-77-0-0-16."""
    return re.sub(r"[.:/]", "-", str(cidr))


def converted_name(v1_name: str) -> str:
    """A v1 name made DNS-1123, with a hash of the original when it had to
    change (convertName), so that distinct v1 names stay distinct."""
    name = re.sub(r"[^-.a-z0-9]+", "-", v1_name.lower().replace("/", "."))
    name = re.sub(r"[.-]*\.[.-]*", ".", name).strip(".-")
    if name == v1_name:
        return name
    return f"{name}-{hashlib.sha1(v1_name.encode()).hexdigest()[:8]}"


def convert(doc: dict, where: str) -> dict:
    kind = str(doc.get("kind", ""))
    if kind.lower() in ("ippool", "pool"):
        return _ip_pool(doc, where)
    if kind.lower() == "profile":
        return _profile(doc, where)
    raise CommandError(f"{where}: calicoctl v1 kind {kind!r} is not supported (only ipPool "
                       f"and profile are converted); write it as apiVersion: {API_VERSION}")


def _mapping(doc: dict, key: str, where: str) -> dict:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise CommandError(f"{where}: {key} must be a mapping")
    return value


def _ip_pool(doc: dict, where: str) -> dict:
    meta, spec = _mapping(doc, "metadata", where), _mapping(doc, "spec", where)
    try:
        cidr = IPNetwork(str(meta["cidr"])).cidr
    except (KeyError, AddrFormatError, ValueError):
        raise CommandError(f"{where}: a v1 ipPool needs metadata.cidr, e.g. "
                           "192.168.0.0/16") from None
    ipip = spec.get("ipip") or {}
    ipip_mode = "Never"
    if ipip.get("enabled"):
        ipip_mode = "CrossSubnet" if str(ipip.get("mode", "")).lower() == "cross-subnet" \
            else "Always"
    return {"apiVersion": API_VERSION, "kind": "IPPool",
            "metadata": {"name": cidr_to_name(cidr)},
            "spec": {"cidr": str(cidr), "ipipMode": ipip_mode,
                     "natOutgoing": bool(spec.get("nat-outgoing")),
                     "disabled": bool(spec.get("disabled")),
                     "blockSize": 26 if cidr.version == 4 else 122,
                     "nodeSelector": "all()"}}


def _profile(doc: dict, where: str) -> dict:
    meta, spec = _mapping(doc, "metadata", where), _mapping(doc, "spec", where)
    if not meta.get("name"):
        raise CommandError(f"{where}: a v1 profile needs metadata.name")
    labels = dict(meta.get("labels") or {})
    for tag in meta.get("tags") or []:
        if tag in labels:
            raise CommandError(f"{where}: profile {meta['name']}: tag {tag!r} and label "
                               f"{tag}={labels[tag]} clash; rename the label")
        labels[tag] = ""
    v3_spec = {}
    for direction in ("ingress", "egress"):
        rules = [_rule(r, where) for r in spec.get(direction) or []]
        if rules:
            v3_spec[direction] = rules
    if labels:
        v3_spec["labelsToApply"] = labels
    return {"apiVersion": API_VERSION, "kind": "Profile",
            "metadata": {"name": converted_name(str(meta["name"]))}, "spec": v3_spec}


def _rule(rule: dict, where: str) -> dict:
    action = str(rule.get("action") or "allow").lower()
    if action not in _ACTIONS:
        raise CommandError(f"{where}: rule action {rule.get('action')!r} is not one of "
                           + ", ".join(_ACTIONS))
    out = {"action": _ACTIONS[action]}
    if rule.get("ipVersion") is not None:
        out["ipVersion"] = rule["ipVersion"]
    for v1_key, v3_key in (("protocol", "protocol"), ("!protocol", "notProtocol")):
        if rule.get(v1_key) is not None:
            value = rule[v1_key]
            out[v3_key] = _PROTOCOLS.get(str(value).lower(), value)
    for v1_key, v3_key in (("icmp", "icmp"), ("!icmp", "notICMP")):
        if rule.get(v1_key):
            out[v3_key] = dict(rule[v1_key])
    out["source"] = _entity(rule.get("source") or {}, where)
    out["destination"] = _entity(rule.get("destination") or {}, where)
    return out


def _entity(entity: dict, where: str) -> dict:
    out = {}
    for prefix, nets_key, selector_key, ports_key in (("", "nets", "selector", "ports"),
                                                      ("!", "notNets", "notSelector",
                                                       "notPorts")):
        nets = ([entity[prefix + "net"]] if entity.get(prefix + "net") else []) \
            + list(entity.get(prefix + "nets") or [])
        if nets:
            out[nets_key] = [_masked(n, where) for n in nets]
        selector = _with_tag(entity.get(prefix + "selector") or "", entity.get(prefix + "tag"))
        if selector:
            out[selector_key] = selector
        if entity.get(prefix + "ports"):
            out[ports_key] = list(entity[prefix + "ports"])
    return out


def _with_tag(selector: str, tag: str | None) -> str:
    # v3 has no tags: an endpoint "has tag t" when its profile applies label t.
    if not tag:
        return selector
    return f"({selector}) && {tag} == ''" if selector else f"{tag} == ''"


def _masked(net, where: str) -> str:
    try:
        return str(IPNetwork(str(net)).cidr)
    except (AddrFormatError, ValueError):
        raise CommandError(f"{where}: {net!r} is not a CIDR") from None
