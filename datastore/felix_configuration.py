"""The FelixConfiguration fields this plugin's node agent honours, read as
Felix reads them (felix/config/config_params.go):

* `defaultEndpointToHostAction`: what happens to a packet from a workload
  to its own host once the workload's egress policy allowed it: Drop (the
  default), Accept or Return; case-insensitive, as Felix parses it.
* `failsafeInboundHostPorts` / `failsafeOutboundHostPorts`: what host
  endpoint policy never closes (a list of {protocol, port, net}); in the
  environment in Felix's string form, `tcp:22,udp:68,tcp:10.0.0.0/8:2379`,
  `none` for an empty list.

Felix takes each field from the highest source that sets it: the
environment (FELIX_<FIELD>, upper case), then the FelixConfiguration
`node.<nodename>`, then `default`, then its built-in default.  Other
FelixConfiguration fields are stored as given and ignored here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from datastore.resources import Resource

FELIX_CONFIGURATION = "FelixConfiguration"
GLOBAL = "default"
ENDPOINT_TO_HOST_ACTIONS = ("Drop", "Accept", "Return")
DEFAULT_ENDPOINT_TO_HOST_ACTION = "Drop"
ENDPOINT_TO_HOST_ENV = "FELIX_DEFAULTENDPOINTTOHOSTACTION"
FAILSAFE_INBOUND_ENV = "FELIX_FAILSAFEINBOUNDHOSTPORTS"
FAILSAFE_OUTBOUND_ENV = "FELIX_FAILSAFEOUTBOUNDHOSTPORTS"
_PROTOCOLS = ("tcp", "udp")  # as Felix's port-list parser


class FelixConfigurationError(ValueError):
    """A field this plugin reads has a value Felix would refuse; the message
    names the field and the values it takes."""


@dataclass(frozen=True, order=True)
class ProtoPort:
    """One failsafe port: protocol, port, and the peer's network (None: any)."""

    protocol: str  # "tcp" or "udp"
    port: int
    net: str | None = None  # "10.0.0.0/8", "fd00::/64"

    @property
    def family(self) -> int | None:
        return None if self.net is None else ipaddress.ip_network(self.net).version

    def __str__(self):
        if self.net is None:
            return f"{self.protocol}:{self.port}"
        net = f"[{self.net}]" if self.family == 6 else self.net
        return f"{self.protocol}:{net}:{self.port}"


def _ports(*text: str) -> tuple[ProtoPort, ...]:
    return tuple(ProtoPort(p, int(n)) for p, n in (t.split(":") for t in text))


# Felix's defaults (config_params.go).
FAILSAFE_INBOUND = _ports("tcp:22", "udp:68", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473",
                          "tcp:6443", "tcp:6666", "tcp:6667")
FAILSAFE_OUTBOUND = _ports("udp:53", "udp:67", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473",
                           "tcp:6443", "tcp:6666", "tcp:6667")


def node_name(nodename: str) -> str:
    """The FelixConfiguration that holds one node's settings."""
    return "node." + nodename


def endpoint_to_host_action(value, where: str) -> str:
    """The canonical spelling (Drop, Accept, Return) of a value given in any
    case; FelixConfigurationError naming `where` otherwise."""
    if isinstance(value, str):
        for action in ENDPOINT_TO_HOST_ACTIONS:
            if value.lower() == action.lower():
                return action
    raise FelixConfigurationError(f"{where}: {value!r} is not Drop, Accept or Return")


def port_list(text: str, where: str) -> tuple[ProtoPort, ...]:
    """Felix's string form, as in FELIX_FAILSAFEINBOUNDHOSTPORTS: comma-separated
    `PORT`, `PROTOCOL:PORT` or `PROTOCOL:NET:PORT` (an IPv6 NET in brackets);
    `none` is the empty list."""
    if text.strip().lower() == "none":
        return ()
    found = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        net = None
        if "[" in item and "]:" in item:
            start, end = item.index("["), item.index("]:")
            net, item = item[start + 1:end], item[:start] + item[end + 2:]
        parts = item.split(":")
        if len(parts) > 3:
            raise FelixConfigurationError(
                f"{where}: {item!r}: ports are PORT, PROTOCOL:PORT or PROTOCOL:NET:PORT "
                "(e.g. tcp:22,udp:68,tcp:10.0.0.0/8:2379), or none")
        protocol, port = ("tcp", parts[0]) if len(parts) == 1 else (parts[0], parts[-1])
        if len(parts) == 3:
            net = parts[1]
        found.append(_proto_port(protocol, port, net, where))
    return tuple(found)


def _proto_port(protocol, port, net, where: str) -> ProtoPort:
    if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
        raise FelixConfigurationError(f"{where}: protocol {protocol!r} is not tcp or udp")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise FelixConfigurationError(f"{where}: port {port!r} is not a number 0-65535")
    if net not in (None, ""):
        try:
            net = str(ipaddress.ip_network(net, strict=False))
        except (TypeError, ValueError):
            raise FelixConfigurationError(
                f"{where}: {net!r} is not an IP address or CIDR") from None
    return ProtoPort(protocol.lower(), port, net or None)


def _resource_port_list(value, where: str) -> tuple[ProtoPort, ...]:
    """The resource's form: a list of {protocol, port, net}."""
    if not isinstance(value, list):
        raise FelixConfigurationError(f"{where}: must be a list of {{protocol, port, net}}")
    found = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise FelixConfigurationError(f"{where}[{i}]: must be {{protocol, port, net}}")
        found.append(_proto_port(item.get("protocol") or "TCP", item.get("port"),
                                 item.get("net"), f"{where}[{i}]"))
    return tuple(found)


@dataclass(frozen=True)
class FelixSettings:
    """What one source (a FelixConfiguration, or the environment) sets of the
    fields above (None: unset)."""

    default_endpoint_to_host_action: str | None = None
    failsafe_inbound_host_ports: tuple[ProtoPort, ...] | None = None
    failsafe_outbound_host_ports: tuple[ProtoPort, ...] | None = None

    @classmethod
    def from_resource(cls, res: Resource) -> FelixSettings:
        spec = res.spec if isinstance(res.spec, dict) else {}
        where = f"{FELIX_CONFIGURATION} {res.name}: spec."
        action = spec.get("defaultEndpointToHostAction")
        inbound = spec.get("failsafeInboundHostPorts")
        outbound = spec.get("failsafeOutboundHostPorts")
        return cls(  # Felix ignores an empty action; an empty port list is none
            None if action in (None, "") else
            endpoint_to_host_action(action, where + "defaultEndpointToHostAction"),
            None if inbound is None else
            _resource_port_list(inbound, where + "failsafeInboundHostPorts"),
            None if outbound is None else
            _resource_port_list(outbound, where + "failsafeOutboundHostPorts"))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FelixSettings:
        """The FELIX_* variables this plugin reads; FelixConfigurationError
        naming the variable for a bad value."""
        action, inbound, outbound = (env.get(name) for name in (
            ENDPOINT_TO_HOST_ENV, FAILSAFE_INBOUND_ENV, FAILSAFE_OUTBOUND_ENV))
        return cls(
            endpoint_to_host_action(action, ENDPOINT_TO_HOST_ENV) if action else None,
            port_list(inbound, FAILSAFE_INBOUND_ENV) if inbound else None,
            port_list(outbound, FAILSAFE_OUTBOUND_ENV) if outbound else None)


_ENV_NAMES = {"default_endpoint_to_host_action": ENDPOINT_TO_HOST_ENV,
              "failsafe_inbound_host_ports": FAILSAFE_INBOUND_ENV,
              "failsafe_outbound_host_ports": FAILSAFE_OUTBOUND_ENV}
_DEFAULTS = {"default_endpoint_to_host_action": DEFAULT_ENDPOINT_TO_HOST_ACTION,
             "failsafe_inbound_host_ports": FAILSAFE_INBOUND,
             "failsafe_outbound_host_ports": FAILSAFE_OUTBOUND}


def resolve(field: str, env: FelixSettings, nodename: str,
            configurations: dict[str, FelixSettings]) -> tuple[object, str]:
    """(value of `field`, where it came from) by Felix's precedence: the
    environment, node.<nodename>, default, the built-in default."""
    value = getattr(env, field)
    if value is not None:
        return value, _ENV_NAMES[field]
    for name in (node_name(nodename), GLOBAL):
        settings = configurations.get(name)
        if settings is not None and getattr(settings, field) is not None:
            return getattr(settings, field), f"{FELIX_CONFIGURATION} {name}"
    return _DEFAULTS[field], "default"
