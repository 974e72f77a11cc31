"""Resource kinds as the commands name them: calicoctl's kind names, plurals
and short aliases (`ippool`, `ipp`, `wep`, ...), the namespace this plugin's
workload endpoints live in, and names as stored and shown (a
GlobalNetworkPolicy `db` is stored as `default.db`, as calicoctl stores it)."""

import dataclasses

from datastore.policy import GLOBAL_NETWORK_POLICY, display_name, storage_name
from datastore.resources import NAMESPACED, PLURALS, Resource
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
    "HostEndpoint": ("hep", "heps"),
    "ClusterInformation": ("clusterinfo", "clusterinfos"),
    "FelixConfiguration": ("felixconfig", "felixconfigs"),
    "BGPConfiguration": ("bgpconfig", "bgpconfigs"),
    "BGPPeer": ("bgpp", "bgpps", "bp", "bps"),
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


def stored_name(kind: str, name: str) -> str:
    """The name an object is kept under in etcd, e.g. GlobalNetworkPolicy db
    -> default.db (a name given as default.db stays so)."""
    return storage_name(name) if kind == GLOBAL_NETWORK_POLICY else name


def shown_name(kind: str, name: str) -> str:
    """The name calicoctl shows for a stored one, e.g. default.db -> db."""
    return display_name(name) if kind == GLOBAL_NETWORK_POLICY else name


def shown(res: Resource) -> Resource:
    """res as calicoctl shows it (and as a manifest names it)."""
    name = shown_name(res.kind, res.name)
    return res if name == res.name else dataclasses.replace(res, name=name)
