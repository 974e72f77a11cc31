"""Calico's BGP resources, BGPConfiguration and BGPPeer, as this plugin
reads them (shared/reference/calico-bgp.md §1): a typed model, the
defaults calico/node's confd applies, and validation.

One parser serves two readers, as for policy: the CLI validates before it
writes (validate_resource), and the agent's BGP view builds the model from
what it reads and treats an object that raises BGPError as absent (the
follower logs the message).

Validation follows libcalico-go's v3 validator (node and nodeSelector
exclusive, peerIP/asNumber and peerSelector exclusive, selectors parse,
ports and AS numbers in range).  Beyond it, what this plugin's BIRD does
not do is refused by name rather than ignored: passwords (they come from
Kubernetes Secrets in Calico), Kubernetes Service advertisement, BGPFilters,
communities, and the newer peer fields.  Unknown fields are refused too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netaddr import AddrFormatError, IPAddress

from datastore.resources import Resource
from datastore.selector import Selector, SelectorError, parse as parse_selector

BGP_CONFIGURATION = "BGPConfiguration"
BGP_PEER = "BGPPeer"
GLOBAL = "default"  # the BGPConfiguration with the cluster's values
NODE_PREFIX = "node."  # node.<nodename>: one node's listenPort and logSeverityScreen
DEFAULT_AS = 64512
DEFAULT_PORT = 179
LOG_SEVERITIES = ("Debug", "Info", "Warning", "Error", "Fatal")
BIND_MODES = ("None", "NodeIP")
SOURCE_ADDRESSES = ("UseNodeIP", "None")
_MAX_AS = 2 ** 32 - 1

_PASSWORDS = "BGP passwords are not supported yet"
_SERVICES = ("advertising Kubernetes Services is not supported: Docker has no Services "
             "(publish a container's port, or route its address)")
_NOT_SUPPORTED = "not supported by this plugin"
# Fields Calico has that are refused by name, with why.
_CONFIGURATION_REFUSED = {
    "nodeMeshPassword": _PASSWORDS,
    "serviceClusterIPs": _SERVICES,
    "serviceExternalIPs": _SERVICES,
    "serviceLoadBalancerIPs": _SERVICES,
    "serviceLoadBalancerAggregation": _SERVICES,
    "communities": _NOT_SUPPORTED,
    "prefixAdvertisements": _NOT_SUPPORTED,
    "localWorkloadPeeringIPV4": _NOT_SUPPORTED,
    "localWorkloadPeeringIPV6": _NOT_SUPPORTED,
    "programClusterRoutes": _NOT_SUPPORTED + " (the backend decides who programs routes: "
                            "CALICO_NETWORKING_BACKEND)",
}
_CONFIGURATION_FIELDS = ("asNumber", "nodeToNodeMeshEnabled", "logSeverityScreen",
                         "listenPort", "bindMode", "ignoredInterfaces",
                         "nodeMeshMaxRestartTime")
_NODE_CONFIGURATION_FIELDS = ("listenPort", "logSeverityScreen")  # as confd honours them
_PEER_REFUSED = {
    "password": _PASSWORDS,
    "filters": "BGPFilters are " + _NOT_SUPPORTED,
    "reachableBy": _NOT_SUPPORTED,
    "localWorkloadSelector": _NOT_SUPPORTED,
    "reversePeering": _NOT_SUPPORTED + " (peerings are always made symmetric)",
    "nextHopMode": _NOT_SUPPORTED + "; use keepOriginalNextHop",
    "localASNumber": _NOT_SUPPORTED,
    "keepaliveTime": _NOT_SUPPORTED,
}
_PEER_FIELDS = ("node", "nodeSelector", "peerIP", "peerSelector", "asNumber",
                "keepOriginalNextHop", "sourceAddress", "maxRestartTime",
                "numAllowedLocalASNumbers", "ttlSecurity")

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?)(h|ms|m|s)")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class BGPError(ValueError):
    """A BGP resource this plugin will not apply.  The message reads
    "<Kind> <name>: <field path>: <what is wrong>"."""

    def __init__(self, kind: str, name: str, path: str, reason: str):
        super().__init__(f"{kind} {name}: {path}: {reason}")
        self.kind, self.name, self.path, self.reason = kind, name, path, reason


def as_number(value) -> int:
    """An AS number as numorstring.ASNumber reads it: a JSON number, its
    decimal string, or asdot ("1.10" = 65546); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an AS number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\d+", value):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value):
        high, low = (int(p) for p in value.split("."))
        if high > 0xFFFF or low > 0xFFFF:
            raise ValueError(f"{value!r} is not an AS number")
        number = high << 16 | low
    else:
        raise ValueError(f"{value!r} is not an AS number (a number, or asdot like 1.10)")
    if not 0 < number <= _MAX_AS:
        raise ValueError(f"{value!r} is not an AS number 1-{_MAX_AS}")
    return number


def duration_seconds(value) -> int:
    """A metav1.Duration ("120s", "2m", "1h30m") rounded to whole seconds,
    as confd renders it; ValueError otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{value!r} is not a duration like 120s")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(value):
        if match.start() != pos:
            break
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        pos = match.end()
    if pos != len(value):
        raise ValueError(f"{value!r} is not a duration like 120s")
    return round(total)


def peer_address(text) -> tuple[IPAddress, int | None]:
    """peerIP as Calico writes it: "10.0.0.1", "10.0.0.1:1179", "fd00::1"
    or "[fd00::1]:1179" -> (address, port or None); ValueError otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not an IP address")
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r}: an IPv6 address with a port is [addr]:port")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if host.count(":") == 0 and not _IPV4_RE.match(host):
        raise ValueError(f"{text!r} is not an IP address")
    try:
        address = IPAddress(host)
    except (AddrFormatError, ValueError):
        raise ValueError(f"{text!r} is not an IP address") from None
    return address, None if port is None else _port(port, text)


def _port(value, what) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 65535:
        raise ValueError(f"{what!r}: the port must be a number 1-65535")
    return value


class _Spec:
    """Reads one resource's spec, each failure a BGPError naming the field."""

    def __init__(self, res: Resource, allowed: tuple[str, ...], refused: dict[str, str]):
        self.res = res
        if not isinstance(res.spec, dict):
            self.fail("spec", "must be a mapping")
        for name in res.spec:
            if name in refused:
                self.fail("spec." + name, refused[name])
            if name not in allowed:
                why = ("read only from the BGPConfiguration default"
                       if name in _CONFIGURATION_FIELDS else "unknown field")
                self.fail("spec." + name, f"{why} (fields: {', '.join(allowed)})")

    def fail(self, path: str, reason: str):
        raise BGPError(self.res.kind, self.res.name, path, reason)

    def get(self, name: str, read, empty=(None, "")):
        """read(value) of the field, or None when it is unset or empty."""
        value = self.res.spec.get(name)
        if value in empty:
            return None
        try:
            return read(value)
        except (ValueError, TypeError) as exc:
            self.fail("spec." + name, str(exc))

    def boolean(self, name: str) -> bool | None:
        def read(value):
            if not isinstance(value, bool):
                raise ValueError(f"{value!r} is not true or false")
            return value
        return self.get(name, read)

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        def read(value):
            if value not in choices:
                raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
            return value
        return self.get(name, read)

    def selector(self, name: str) -> Selector | None:
        def read(value):
            if not isinstance(value, str):
                raise ValueError(f"{value!r} is not a selector")
            try:
                return parse_selector(value)
            except SelectorError as exc:
                raise ValueError(str(exc)) from None
        return self.get(name, read)

    def count(self, name: str, low: int, high: int) -> int | None:
        def read(value):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{value!r} is not a number {low}-{high}")
            return value
        return self.get(name, read, empty=(None,))


@dataclass(frozen=True)
class BGPConfiguration:
    """One BGPConfiguration; None: unset, the next source or the default
    decides (effective() resolves them)."""

    name: str
    as_number: int | None = None
    node_to_node_mesh: bool | None = None
    log_severity: str | None = None  # Debug, Info, Warning, Error, Fatal
    listen_port: int | None = None
    bind_mode: str | None = None  # None or NodeIP
    ignored_interfaces: tuple[str, ...] = ()
    node_mesh_restart_time: int | None = None  # seconds

    @classmethod
    def from_resource(cls, res: Resource) -> BGPConfiguration:
        if res.name == GLOBAL:
            allowed = _CONFIGURATION_FIELDS
        elif res.name.startswith(NODE_PREFIX) and len(res.name) > len(NODE_PREFIX):
            allowed = _NODE_CONFIGURATION_FIELDS
        else:
            raise BGPError(res.kind, res.name, "metadata.name",
                           f"is {GLOBAL!r} (the cluster's settings) or node.<nodename> "
                           "(one node's listenPort and logSeverityScreen); any other "
                           "name applies to nothing")
        spec = _Spec(res, allowed, _CONFIGURATION_REFUSED)
        ignored = spec.get("ignoredInterfaces", _interface_globs, empty=(None, [])) or ()
        return cls(res.name, spec.get("asNumber", as_number),
                   spec.boolean("nodeToNodeMeshEnabled"),
                   spec.choice("logSeverityScreen", LOG_SEVERITIES),
                   spec.get("listenPort", lambda v: _port(v, "listenPort")),
                   spec.choice("bindMode", BIND_MODES), ignored,
                   spec.get("nodeMeshMaxRestartTime", duration_seconds))


def _interface_globs(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.*?@:+-]{1,15}", v) for v in value):
        raise ValueError("must be a list of interface names or globs (eth*, cali*)")
    return tuple(value)


@dataclass(frozen=True)
class BGPSettings:
    """The BGP settings one node runs with: its node.<name> object over
    default over calico/node's defaults."""

    as_number: int = DEFAULT_AS
    node_to_node_mesh: bool = True
    log_severity: str = "Info"
    listen_port: int = DEFAULT_PORT
    bind_mode: str = "None"
    ignored_interfaces: tuple[str, ...] = ()
    node_mesh_restart_time: int | None = None

    @classmethod
    def effective(cls, configurations: dict[str, BGPConfiguration],
                  nodename: str) -> BGPSettings:
        default = configurations.get(GLOBAL) or BGPConfiguration(GLOBAL)
        node = configurations.get(NODE_PREFIX + nodename) or BGPConfiguration("")
        base = cls()
        return cls(
            default.as_number or base.as_number,
            base.node_to_node_mesh if default.node_to_node_mesh is None
            else default.node_to_node_mesh,
            node.log_severity or default.log_severity or base.log_severity,
            node.listen_port or default.listen_port or base.listen_port,
            default.bind_mode or base.bind_mode,
            default.ignored_interfaces,
            default.node_mesh_restart_time)

@dataclass(frozen=True)
class BGPPeer:
    """One BGPPeer.  The local side: `node`, or the nodes `node_selector`
    matches, or every node (global).  The remote side: peer_ip with
    as_number, or the Calico nodes `peer_selector` matches."""

    name: str
    node: str | None = None
    node_selector: Selector | None = None
    peer_ip: IPAddress | None = None
    peer_port: int | None = None
    peer_selector: Selector | None = None
    as_number: int | None = None
    keep_original_next_hop: bool = False
    source_address: str = "UseNodeIP"
    max_restart_time: int | None = None  # seconds
    num_allowed_local_as: int | None = None
    ttl_security: int | None = None  # hops

    @property
    def is_global(self) -> bool:
        return self.node is None and self.node_selector is None

    @classmethod
    def from_resource(cls, res: Resource) -> BGPPeer:
        spec = _Spec(res, _PEER_FIELDS, _PEER_REFUSED)
        node = spec.get("node", _node_name)
        node_selector = spec.selector("nodeSelector")
        peer = spec.get("peerIP", peer_address)
        peer_selector = spec.selector("peerSelector")
        asn = spec.get("asNumber", as_number, empty=(None, "", 0))
        if node and node_selector:
            spec.fail("spec.node", "must be empty when nodeSelector is specified")
        if peer_selector is not None and peer is not None:
            spec.fail("spec.peerIP", "must be empty when peerSelector is specified")
        if peer_selector is not None and asn is not None:
            spec.fail("spec.asNumber", "must be empty when peerSelector is specified "
                      "(the remote AS is each selected node's)")
        if peer_selector is None and peer is None:
            spec.fail("spec", "give peerIP and asNumber (a router), or peerSelector "
                      "(Calico nodes)")
        if peer is not None and asn is None:
            spec.fail("spec.asNumber", f"is needed with peerIP {res.spec['peerIP']}")
        return cls(res.name, node, node_selector,
                   peer and peer[0], peer and peer[1], peer_selector, asn,
                   bool(spec.boolean("keepOriginalNextHop")),
                   spec.choice("sourceAddress", SOURCE_ADDRESSES) or "UseNodeIP",
                   spec.get("maxRestartTime", duration_seconds),
                   spec.count("numAllowedLocalASNumbers", 0, 10) or None,
                   spec.count("ttlSecurity", 0, 255) or None)

    def selects_local(self, nodename: str, labels: dict) -> bool:
        """Is this node a local side of the peering?"""
        if self.node is not None:
            return self.node == nodename
        if self.node_selector is not None:
            return self.node_selector.evaluate(labels)
        return True


def listen_port(configurations: dict[str, BGPConfiguration], nodename: str) -> int:
    """The port a node listens on (and its peers dial): its node.<name>
    object, else default, else 179."""
    for name in (NODE_PREFIX + nodename, GLOBAL):
        configuration = configurations.get(name)
        if configuration is not None and configuration.listen_port:
            return configuration.listen_port
    return DEFAULT_PORT


def _node_name(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a node name")
    return value


def validate_resource(res: Resource) -> Resource:
    """For the CLI, before it writes res: BGPError if res is a BGPPeer or
    BGPConfiguration this plugin will not apply.  Returned unchanged."""
    if res.kind == BGP_PEER:
        BGPPeer.from_resource(res)
    elif res.kind == BGP_CONFIGURATION:
        BGPConfiguration.from_resource(res)
    return res
