"""Resource kinds as the commands name them: calicoctl's kind names, plurals
and short aliases (`ippool`, `ipp`, `wep`, ...), and the namespace this
plugin's workload endpoints live in."""

from datastore.resources import NAMESPACED, PLURALS
from driver.endpoints import NAMESPACE
from plugin.cli.errors import CommandError

# Where `get workloadendpoints` looks without -n, and where a WorkloadEndpoint
# in a manifest without metadata.namespace goes: this plugin's namespace, not
# calicoctl's "default", so that its own endpoints show up.
DEFAULT_NAMESPACE = NAMESPACE

_SHORT = {
    "IPPool": ("ipp", "ipps", "pool", "pools"),
    "Node": ("no", "nos"),
    "WorkloadEndpoint": ("wep", "weps"),
    "Profile": ("pro", "pros"),
    "GlobalNetworkPolicy": ("gnp", "gnps"),
    "ClusterInformation": ("clusterinfo", "clusterinfos"),
    "FelixConfiguration": ("felixconfig", "felixconfigs"),
    "BGPConfiguration": ("bgpconfig", "bgpconfigs"),
}
_ALIASES = {alias: kind for kind, plural in PLURALS.items()
            for alias in (kind.lower(), plural, *_SHORT.get(kind, ()))}


def kind_of(word: str) -> str:
    """The kind a command-line word names, e.g. 'ipp' -> 'IPPool'."""
    kind = _ALIASES.get(word.lower())
    if kind is None:
        raise CommandError(f"unknown resource type {word!r}; use one of "
                           + ", ".join(PLURALS.values()))
    return kind


def plural(kind: str) -> str:
    return PLURALS[kind]


def namespaced(kind: str) -> bool:
    return kind in NAMESPACED
