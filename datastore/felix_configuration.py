"""The FelixConfiguration fields this plugin's node agent honours, read as
Felix reads them (felix/config/config_params.go):

* `defaultEndpointToHostAction`: what happens to a packet from a workload
  to its own host once the workload's egress policy allowed it: Drop (the
  default), Accept or Return; case-insensitive, as Felix parses it.

Felix takes each field from the highest source that sets it: the
environment (FELIX_<FIELD>, upper case), then the FelixConfiguration
`node.<nodename>`, then `default`, then its built-in default.  Other
FelixConfiguration fields are stored as given and ignored here.
"""

from __future__ import annotations

from dataclasses import dataclass

from datastore.resources import Resource

FELIX_CONFIGURATION = "FelixConfiguration"
GLOBAL = "default"
ENDPOINT_TO_HOST_ACTIONS = ("Drop", "Accept", "Return")
DEFAULT_ENDPOINT_TO_HOST_ACTION = "Drop"
ENDPOINT_TO_HOST_ENV = "FELIX_DEFAULTENDPOINTTOHOSTACTION"


class FelixConfigurationError(ValueError):
    """A field this plugin reads has a value Felix would refuse; the message
    names the field and the values it takes."""


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


@dataclass(frozen=True)
class FelixSettings:
    """What one FelixConfiguration sets of the fields above (None: unset)."""

    default_endpoint_to_host_action: str | None = None

    @classmethod
    def from_resource(cls, res: Resource) -> FelixSettings:
        spec = res.spec if isinstance(res.spec, dict) else {}
        action = spec.get("defaultEndpointToHostAction")
        if action in (None, ""):  # Felix ignores an empty value
            return cls()
        return cls(endpoint_to_host_action(
            action, f"{FELIX_CONFIGURATION} {res.name}: spec.defaultEndpointToHostAction"))


def resolve_endpoint_to_host_action(env_value: str | None, nodename: str,
                                    configurations: dict[str, FelixSettings]) -> tuple[str, str]:
    """(action, where it came from) by Felix's precedence: the environment,
    node.<nodename>, default, the built-in Drop."""
    if env_value:
        return env_value, ENDPOINT_TO_HOST_ENV
    for name in (node_name(nodename), GLOBAL):
        settings = configurations.get(name)
        if settings is not None and settings.default_endpoint_to_host_action:
            return settings.default_endpoint_to_host_action, f"{FELIX_CONFIGURATION} {name}"
    return DEFAULT_ENDPOINT_TO_HOST_ACTION, "default"
