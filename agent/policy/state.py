"""What the policy engine knows: every workload and host endpoint in the
cluster, the Profiles and GlobalNetworkPolicies, and the
FelixConfigurations, kept from etcd keys.  Pure bookkeeping, like
agent/routing/model.py: a key is applied with its whole new value (None when
deleted), so replayed events end in the right state.

Invalid objects count as absent, as in Felix (calico-policy.md §1.9), except
a listed Profile that does not parse: it denies (§4.3, "missing profile").
"""

import logging
from dataclasses import dataclass, replace

from datastore.felix_configuration import FelixConfigurationError, FelixSettings
from datastore.host_endpoint import host_endpoint_from_resource
from datastore.policy import (GlobalNetworkPolicy, PolicyError, Profile, policy_from_resource,
                              profile_from_resource)
from datastore.resources import PREFIX, Resource

LOG = logging.getLogger(__name__)

WEP_PREFIX = PREFIX + "workloadendpoints/"
PROFILE_PREFIX = PREFIX + "profiles/"
POLICY_PREFIX = PREFIX + "globalnetworkpolicies/"
FELIX_PREFIX = PREFIX + "felixconfigurations/"
HEP_PREFIX = PREFIX + "hostendpoints/"
PREFIXES = (WEP_PREFIX, HEP_PREFIX, PROFILE_PREFIX, POLICY_PREFIX, FELIX_PREFIX)
# Felix drops these from an endpoint's own labels (calico-policy.md §3.6).
_DROPPED_LABEL_PREFIXES = ("pcns.", "pcsa.")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A workload or host endpoint as policy sees it."""

    key: str
    node: str
    # a host endpoint's may be "*" (every interface of its host) or "" (those
    # holding its expectedIPs)
    interface: str
    # "10.65.0.3", "fd00::3": a workload's ipNetworks without prefix, a host
    # endpoint's expectedIPs
    addresses: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]  # its own, sorted
    profiles: tuple[str, ...]
    host: bool = False  # a HostEndpoint

    @classmethod
    def from_resource(cls, key: str, res: Resource) -> "Endpoint":
        spec = res.spec
        labels = {k: str(v) for k, v in (res.metadata.get("labels") or {}).items()
                  if not k.startswith(_DROPPED_LABEL_PREFIXES)}
        return cls(key, spec.get("node") or "", spec.get("interfaceName") or "",
                   tuple(_address(n) for n in spec.get("ipNetworks") or ()),
                   tuple(sorted(labels.items())), tuple(spec.get("profiles") or ()))

    @classmethod
    def from_host_endpoint(cls, key: str, res: Resource) -> "Endpoint":
        hep = host_endpoint_from_resource(res)
        return cls(key, hep.node, hep.interface, hep.expected_ips,
                   tuple(sorted(hep.labels.items())), hep.profiles, host=True)


# A listed profile that exists but cannot be enforced: it denies everything.
INVALID = object()


class PolicyState:
    def __init__(self):
        self.endpoints: dict[str, Endpoint] = {}
        self.profiles: dict[str, Profile | object] = {}  # name -> Profile or INVALID
        self.policies: dict[str, GlobalNetworkPolicy] = {}  # stored name -> policy
        # FelixConfiguration name -> the fields the agent reads (every node's;
        # the engine picks default and its own node.<name>)
        self.felix: dict[str, FelixSettings] = {}

    def on_change(self, key: str, value: bytes | None) -> str | None:
        """Record one key; returns what changed ("endpoint", "profile",
        "policy", "felix"), or None when policy sees no change: not a key
        it reads, or a record equal to the one held as policy sees it (an
        endpoint whose annotations alone changed: its sandbox, its DNS
        names)."""
        if key.startswith((WEP_PREFIX, HEP_PREFIX)):
            what, held, name = "endpoint", self.endpoints, key
            build = Endpoint.from_resource if key.startswith(WEP_PREFIX) \
                else Endpoint.from_host_endpoint
            new = None if value is None else _parse(key, value, build)
        elif key.startswith(PROFILE_PREFIX):
            what, held, name = "profile", self.profiles, key[len(PROFILE_PREFIX):]
            new = None if value is None else \
                _parse(key, value, lambda _, res: profile_from_resource(res)) or INVALID
        elif key.startswith(POLICY_PREFIX):
            what, held, name = "policy", self.policies, key[len(POLICY_PREFIX):]
            new = None if value is None else \
                _parse(key, value, lambda _, res: policy_from_resource(res))
        elif key.startswith(FELIX_PREFIX):
            what, held, name = "felix", self.felix, key[len(FELIX_PREFIX):]
            # An invalid field counts as unset: the next source decides.
            new = None if value is None else \
                _parse(key, value, lambda _, res: FelixSettings.from_resource(res)) \
                or FelixSettings()
        else:
            return None
        if held.get(name) == new:
            return None
        if new is None:
            del held[name]
        else:
            held[name] = new
        return what

    def labels_of(self, endpoint: Endpoint) -> dict[str, str]:
        """Own labels, then each profile's labelsToApply in order; the first
        to set a key wins (calico-policy.md §3.6)."""
        labels = dict(endpoint.labels)
        for name in endpoint.profiles:
            profile = self.profiles.get(name)
            if isinstance(profile, Profile):
                for k, v in profile.labels_to_apply.items():
                    labels.setdefault(k, v)
        return labels

    def local_endpoints(self, node: str) -> list[Endpoint]:
        """This node's workload endpoints, by interface."""
        return sorted((e for e in self.endpoints.values()
                       if e.node == node and e.interface and not e.host),
                      key=lambda e: e.interface)

    def local_host_endpoints(self, node: str,
                             addresses: dict[str, frozenset[str]] | None = None
                             ) -> list[Endpoint]:
        """This node's host endpoints in force, by interface ("*" too), as
        Felix picks them (endpoint_mgr.go): an endpoint without
        interfaceName is the endpoint of each interface holding one of its
        expectedIPs (`addresses`: interface -> its addresses); of several for
        one interface, the first by name.  Each comes with its interface."""
        chosen = {}
        for endpoint in sorted((e for e in self.endpoints.values() if e.node == node and e.host),
                               key=lambda e: e.key):
            if endpoint.interface:
                chosen.setdefault(endpoint.interface, endpoint)
                continue
            for interface, held in (addresses or {}).items():
                if held.intersection(endpoint.addresses):
                    chosen.setdefault(interface, replace(endpoint, interface=interface))
        return [chosen[i] for i in sorted(chosen)]

    def matches_by_address(self, node: str) -> bool:
        """Whether one of this node's host endpoints has no interfaceName:
        then the host's addresses pick its interfaces."""
        return any(e.host and e.node == node and not e.interface
                   for e in self.endpoints.values())


def _parse(key, value, build):
    try:
        return build(key, Resource.from_json(value))
    except (PolicyError, FelixConfigurationError) as exc:
        LOG.warning("not enforcing %s: %s", key, exc)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        LOG.warning("ignoring unreadable %s: %s", key, exc)
    return None


def _address(network: str) -> str:
    return str(network).split("/")[0]
