"""The checks `apply`/`create` make on BGPPeer and BGPConfiguration before
anything is written: calicoctl's (libcalico-go's validator, strict decoding
of the v3 spec, api/pkg/apis/projectcalico/v3/bgppeer.go and bgpconfig.go)
and the fields this plugin refuses by name (passwords until it has a
source of secrets, Kubernetes service advertisement).

Interim: datastore/bgp.py (branch bgp-agent) is the parser the agent reads
these resources with; once it lands, these checks become calls to it.
"""

import ipaddress
import re

from datastore import selector
from datastore.resources import Resource, valid_name
from plugin.cli.errors import CommandError

BGP_PEER, BGP_CONFIGURATION = "BGPPeer", "BGPConfiguration"
GLOBAL = "default"
_NODE_PREFIX = "node."
_AS_MAX = 2 ** 32 - 1
_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$")
_LOG_SEVERITIES = ("Debug", "Info", "Warning", "Error", "Fatal")
_SOURCE_ADDRESSES = ("UseNodeIP", "None")
_BIND_MODES = ("None", "NodeIP")
_NOT_YET = "is not supported by calico-libnetwork yet"
_PASSWORD = (f"{_NOT_YET}: it has no source of secrets (calico/node reads them from "
             "Kubernetes); remove it, or protect port 179 otherwise")
_SERVICES = ("advertises Kubernetes Services, which Docker does not have; remove it")
_PEER_REFUSED = {"password": _PASSWORD}
_CONFIG_REFUSED = {"nodeMeshPassword": _PASSWORD, "serviceClusterIPs": _SERVICES,
                   "serviceExternalIPs": _SERVICES, "serviceLoadBalancerIPs": _SERVICES}
# On a BGPConfiguration node.<name>, calico/node honours only these.
_PER_NODE = ("listenPort", "logSeverityScreen", "prefixAdvertisements")


def check(res: Resource) -> None:
    """CommandError naming the resource and field when res is a BGPPeer or
    BGPConfiguration calicoctl or this plugin would refuse; other kinds pass."""
    if res.kind == BGP_PEER:
        _Fields(res, _PEER_FIELDS, _PEER_REFUSED).check()
        _peer_combinations(res)
    elif res.kind == BGP_CONFIGURATION:
        _Fields(res, _CONFIG_FIELDS, _CONFIG_REFUSED).check()
        _configuration_name(res)


def _error(res: Resource, field: str, message: str) -> CommandError:
    return CommandError(f"{res.kind} {res.name}: spec.{field} {message}")


def as_number(value) -> int | None:
    """An AS number as libcalico-go reads one (numorstring.ASNumber): a
    number, "64512", or asdot "1.10"; None if it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        high, dot, low = value.partition(".")
        if not (high.isdigit() and (not dot or low.isdigit())):
            return None
        value = (int(high) << 16) + int(low) if dot else int(high)
        if dot and (int(high) > 0xFFFF or int(low) > 0xFFFF):
            return None
    return value if isinstance(value, int) and 0 <= value <= _AS_MAX else None


def _peer_ip(value) -> bool:
    """a.b.c.d, a.b.c.d:port, an IPv6 address or [v6]:port (bgppeer.go)."""
    if not isinstance(value, str):
        return False
    host, port = value, None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (rest or None)
        if port is None or not rest:
            return False
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return port is None or (port.isdigit() and 1 <= int(port) <= 65535)


def _address(value) -> bool:
    try:
        ipaddress.ip_address(value)
        return isinstance(value, str)
    except ValueError:
        return False


def _selector(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        selector.parse(value)
    except selector.SelectorError:
        return False
    return True


def _in(*choices):
    return (lambda v: v in choices, "must be one of " + ", ".join(choices))


def _int(low, high):
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
            f"must be a number from {low} to {high}")


def _list_of(test):
    return lambda v: isinstance(v, list) and all(test(x) for x in v)


_AS = (lambda v: as_number(v) is not None, "must be an AS number (0-4294967295, or asdot "
                                           "such as 1.10)")
_BOOL = (lambda v: isinstance(v, bool), "must be true or false")
_DURATION_CHECK = (lambda v: isinstance(v, str) and bool(_DURATION.match(v)),
                   "must be a duration such as 120s or 2m")
_SELECTOR = (_selector, "is not a valid selector (see the policy selector syntax)")

_PEER_FIELDS = {
    "node": (lambda v: isinstance(v, str) and valid_name(v), "must be a node name"),
    "nodeSelector": _SELECTOR,
    "peerSelector": _SELECTOR,
    "peerIP": (_peer_ip, "must be an IP address, IP:port or [IPv6]:port"),
    "asNumber": _AS,
    "keepOriginalNextHop": _BOOL,
    "sourceAddress": _in(*_SOURCE_ADDRESSES),
    "maxRestartTime": _DURATION_CHECK,
    "numAllowedLocalASNumbers": _int(0, 10),
    "ttlSecurity": _int(0, 255),
    "reachableBy": (_address, "must be an IP address (the gateway to the peer)"),
    "filters": (_list_of(lambda x: isinstance(x, str) and valid_name(x)),
                "must be a list of BGPFilter names"),
}
_CONFIG_FIELDS = {
    "asNumber": _AS,
    "nodeToNodeMeshEnabled": _BOOL,
    "logSeverityScreen": _in(*_LOG_SEVERITIES),
    "listenPort": _int(1, 65535),
    "bindMode": _in(*_BIND_MODES),
    "ignoredInterfaces": (_list_of(lambda x: isinstance(x, str) and x != ""),
                          "must be a list of interface names or globs"),
    "nodeMeshMaxRestartTime": _DURATION_CHECK,
    "communities": (_list_of(lambda x: isinstance(x, dict)), "must be a list of "
                                                             "{name, value}"),
    "prefixAdvertisements": (_list_of(lambda x: isinstance(x, dict)), "must be a list of "
                                                                      "{cidr, communities}"),
}


class _Fields:
    """Each field of a spec: known to the v3 API, of its type, not refused."""

    def __init__(self, res: Resource, fields: dict, refused: dict):
        self.res, self.fields, self.refused = res, fields, refused

    def check(self) -> None:
        for field, value in self.res.spec.items():
            if field in self.refused:
                raise _error(self.res, field, self.refused[field])
            if field not in self.fields:
                raise _error(self.res, field, "is not a field of "
                             f"{self.res.kind}; known fields: {', '.join(self.fields)}")
            test, message = self.fields[field]
            if value not in (None, "") and not test(value):
                raise _error(self.res, field, f"{message}, not {value!r}")


def _peer_combinations(res: Resource) -> None:
    spec = res.spec
    if spec.get("node") and spec.get("nodeSelector"):
        raise _error(res, "nodeSelector", "cannot be set with spec.node: a peering is for "
                                          "one node, for the nodes a selector picks, or "
                                          "(neither) for every node")
    if spec.get("peerSelector"):
        for field in ("peerIP", "asNumber"):
            if spec.get(field) not in (None, "", 0):
                raise _error(res, field, "cannot be set with spec.peerSelector: the peers "
                                         "are Calico nodes, with their own addresses and AS")
    elif not spec.get("peerIP"):
        raise _error(res, "peerIP", "is required (with spec.asNumber), or spec.peerSelector "
                                    "to peer with other Calico nodes")
    elif as_number(spec.get("asNumber")) is None:
        raise _error(res, "asNumber", "is required with spec.peerIP: the peer's AS number")


def _configuration_name(res: Resource) -> None:
    if res.name == GLOBAL:
        return
    if not res.name.startswith(_NODE_PREFIX) or not valid_name(res.name[len(_NODE_PREFIX):]):
        raise CommandError(f"BGPConfiguration {res.name}: the name must be `default` (the "
                           "cluster's settings) or node.<nodename> (one node's)")
    for field in res.spec:
        if field not in _PER_NODE:
            raise _error(res, field, f"is read only from BGPConfiguration default; on "
                                     f"{res.name} only {', '.join(_PER_NODE)} count")
