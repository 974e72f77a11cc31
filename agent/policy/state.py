"""What the policy engine knows: every workload and host endpoint in the
cluster, the Profiles and GlobalNetworkPolicies, the FelixConfigurations,
and of the Nodes and IPPools what tunnels.py needs (the hosts' addresses,
the pools' encapsulation), kept from the follower's records
(datastore/records.py).  Pure bookkeeping, like agent/routing/model.py: a
key is applied with its whole new record (None when deleted), so replayed
events end in the right state.

Invalid objects count as absent, as in Felix (calico-policy.md §1.9), except
a listed Profile that does not parse: it denies (§4.3, "missing profile"),
which its Kind says (INVALID_PROFILE).
"""

from dataclasses import dataclass, replace

from datastore.felix_configuration import FelixSettings
from datastore.host_endpoint import HostEndpoint
from datastore.policy import GlobalNetworkPolicy, Profile
from datastore.records import (FELIX_CONFIGURATIONS, GLOBAL_NETWORK_POLICIES, HOST_ENDPOINTS,
                               NODES, PROFILES, WORKLOAD_ENDPOINTS, Kind)
from datastore.workload_endpoint import WorkloadEndpoint
from ipam.pools import POOLS

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
    publishes: bool = False  # a workload with published ports (agent/published.py)

    @classmethod
    def of_workload(cls, key: str, wep: WorkloadEndpoint) -> "Endpoint":
        labels = tuple(kv for kv in wep.labels if not kv[0].startswith(_DROPPED_LABEL_PREFIXES))
        return cls(key, wep.node, wep.interface, wep.addresses, labels, wep.profiles,
                   publishes=bool(wep.published))

    @classmethod
    def of_host(cls, key: str, hep: HostEndpoint) -> "Endpoint":
        return cls(key, hep.node, hep.interface, hep.expected_ips,
                   tuple(sorted(hep.labels.items())), hep.profiles, host=True)


class PolicyState:
    kinds = (WORKLOAD_ENDPOINTS, HOST_ENDPOINTS, PROFILES, GLOBAL_NETWORK_POLICIES,
             FELIX_CONFIGURATIONS, NODES, POOLS)

    def __init__(self):
        self.endpoints: dict[str, Endpoint] = {}
        # (node, whether host endpoints) -> those endpoints' keys
        self._by_node: dict[tuple[str, bool], set[str]] = {}
        self.profiles: dict[str, Profile | object] = {}  # name -> Profile or INVALID_PROFILE
        self.policies: dict[str, GlobalNetworkPolicy] = {}  # stored name -> policy
        # FelixConfiguration name -> the fields the agent reads (every node's;
        # the engine picks default and its own node.<name>)
        self.felix: dict[str, FelixSettings] = {}
        # for tunnels.py: Node name -> its addresses by IP version (spec.bgp)
        self.hosts: dict[str, dict[int, str]] = {}
        # IPPool name -> (IP version, ipipMode, vxlanMode)
        self.pools: dict[str, tuple[int, str, str]] = {}
        # host_addresses' answers until a Node's addresses change: the same
        # object each time, which the renderer skips at once
        self._host_addresses: dict[int, frozenset[str]] = {}

    def on_change(self, kind: Kind, key: str, record) -> str | None:
        """Record one key's record (None: deleted or unreadable); returns
        what changed ("endpoint", "profile", "policy", "felix", "tunnels"), or None
        when policy sees no change: not a kind it reads, or a record equal
        to the one held as policy sees it (an endpoint whose annotations
        alone changed: its sandbox, its DNS names)."""
        if kind is WORKLOAD_ENDPOINTS or kind is HOST_ENDPOINTS:
            what, held, name = "endpoint", self.endpoints, key
            build = Endpoint.of_workload if kind is WORKLOAD_ENDPOINTS else Endpoint.of_host
            new = None if record is None else build(key, record)
        elif kind is NODES or kind is POOLS:
            what, held, name = "tunnels", (self.hosts if kind is NODES else self.pools), \
                key[len(kind.prefix):]
            new = None if record is None else _tunnel_view(kind, record)
        elif kind in _HELD:
            what, attribute = _HELD[kind]
            held, name, new = getattr(self, attribute), key[len(kind.prefix):], record
        else:
            return None
        old = held.get(name)
        if old == new:
            return None
        if new is None:
            del held[name]
        else:
            held[name] = new
        if held is self.hosts:
            self._host_addresses.clear()
        elif held is self.endpoints:
            if old is not None:
                self._by_node[old.node, old.host].discard(key)
            if new is not None:
                self._by_node.setdefault((new.node, new.host), set()).add(key)
        return what

    def host_addresses(self, version: int) -> frozenset[str]:
        """Every Calico host's address of one IP version."""
        found = self._host_addresses.get(version)
        if found is None:
            found = self._host_addresses[version] = frozenset(
                a[version] for a in self.hosts.values() if version in a)
        return found

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
        """This node's workload endpoints with an interface."""
        return [e for e in self._of_node(node, host=False) if e.interface]

    def local_host_endpoints(self, node: str,
                             addresses: dict[str, frozenset[str]] | None = None
                             ) -> list[Endpoint]:
        """This node's host endpoints in force, by interface ("*" too), as
        Felix picks them (endpoint_mgr.go): an endpoint without
        interfaceName is the endpoint of each interface holding one of its
        expectedIPs (`addresses`: interface -> its addresses); of several for
        one interface, the first by name.  Each comes with its interface."""
        chosen = {}
        for endpoint in sorted(self._of_node(node, host=True), key=lambda e: e.key):
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
        return any(not e.interface for e in self._of_node(node, host=True))

    def _of_node(self, node: str, host: bool):
        """The node's host endpoints, or its workload endpoints."""
        return (self.endpoints[key] for key in self._by_node.get((node, host), ()))


def _tunnel_view(kind: Kind, record):
    """What tunnels.py needs of a Node or an IPPool: other changes (a
    heartbeat, a new VTEP) are no change to policy."""
    if kind is POOLS:
        return record.version, record.ipip_mode, record.vxlan_mode
    return {v: str(a.ip) for v in (4, 6) if (a := record.address_of(v)) is not None}


# The kinds held by name (the key's last part): what changed, and where.
_HELD = {PROFILES: ("profile", "profiles"), GLOBAL_NETWORK_POLICIES: ("policy", "policies"),
         FELIX_CONFIGURATIONS: ("felix", "felix")}
