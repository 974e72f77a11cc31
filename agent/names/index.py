"""Which names resolve to which addresses, per network, from the workload
endpoints in etcd (their dns-names and network-name annotations).

A view of the agent's follower (datastore/follower.py): on_change() records
one endpoint, batch_done() publishes a new immutable NameTable that the responder's
thread reads without locks (one reference assignment).  A batch costs what
it changes: the new table shares all but the shards its names and
addresses fall in with the one before (agent/names/shards.py).
"""

import itertools
from dataclasses import dataclass, field

from agent.names.shards import ShardedMap
from datastore.records import WORKLOAD_ENDPOINTS, Kind
from datastore.workload_endpoint import WorkloadEndpoint


@dataclass(frozen=True, slots=True)
class NamedEndpoint:
    network: str  # the Docker network's name (else its first profile)
    names: tuple[str, ...]  # lowercased, no trailing dot
    v4: tuple[str, ...]
    v6: tuple[str, ...]

    @classmethod
    def of(cls, wep: WorkloadEndpoint) -> "NamedEndpoint | None":
        network = wep.network_name or next(iter(wep.profiles), None)
        if not network:
            return None
        return cls(network.lower(), tuple(n.lower().rstrip(".") for n in wep.dns_names),
                   tuple(a for a in wep.addresses if ":" not in a),
                   tuple(a for a in wep.addresses if ":" in a))


@dataclass(frozen=True)
class NameTable:
    """(network, name) -> (v4 addresses, v6 addresses); address -> network."""

    names: ShardedMap = field(default_factory=ShardedMap)
    networks_of: ShardedMap = field(default_factory=ShardedMap)

    def network_of(self, address: str) -> str | None:
        """The network of the endpoint that holds `address` (a querier)."""
        return self.networks_of.get(address)

    def lookup(self, network: str, qname: str):
        """(v4, v6) for `qname` asked from `network`: `<name>` or
        `<name>.<network>`, as Docker's embedded DNS answers; None when the
        name is not one of that network's containers."""
        qname = qname.lower().rstrip(".")
        found = self.names.get((network, qname))
        if found is None and qname.endswith("." + network):
            found = self.names.get((network, qname[:-len(network) - 1]))
        return found


class NameIndex:
    """The follower's view that keeps `table` up to date.

    The answers follow the order endpoints arrived in (an update keeps an
    endpoint's place, a deletion loses it): a name claimed by several
    endpoints of a network gets all their addresses in that order, without
    repeats; an address held by several endpoints belongs to the network of
    the last to arrive.  A batch recomputes only the names and addresses of
    the endpoints it changed, from the endpoints claiming them."""

    kinds = (WORKLOAD_ENDPOINTS,)

    def __init__(self):
        self.table = NameTable()
        self.reset()

    def reset(self) -> None:
        self._endpoints: dict[str, NamedEndpoint] = {}
        self._arrival: dict[str, int] = {}  # key -> its place in arrival order
        self._places = itertools.count()
        self._claims: dict[tuple[str, str], tuple[str, ...]] = {}  # (network, name) -> keys
        self._holders: dict[str, tuple[str, ...]] = {}  # address -> keys
        self._changed_names: set[tuple[str, str]] = set()  # since the last table
        self._changed_addresses: set[str] = set()

    def on_change(self, kind: Kind, key: str, wep: WorkloadEndpoint | None) -> bool:
        """Record one endpoint; False when no answer changes (not an
        endpoint, or one whose names, network and addresses are as they
        were)."""
        if kind is not WORKLOAD_ENDPOINTS:
            return False
        endpoint = None if wep is None else NamedEndpoint.of(wep)
        old = self._endpoints.get(key)
        if old == endpoint:
            return False
        if old is not None:
            self._claim(key, old, False)
        if endpoint is None:
            del self._endpoints[key], self._arrival[key]
        else:
            if old is None:
                self._arrival[key] = next(self._places)
            self._endpoints[key] = endpoint
            self._claim(key, endpoint, True)
        return True

    def _claim(self, key: str, endpoint: NamedEndpoint, claiming: bool) -> None:
        """Add (or withdraw) `key` as a claimant of the endpoint's names and
        a holder of its addresses; their answers change."""
        names = {(endpoint.network, name) for name in endpoint.names}
        addresses = set(endpoint.v4 + endpoint.v6)
        self._changed_names |= names
        self._changed_addresses |= addresses
        for index, items in ((self._claims, names), (self._holders, addresses)):
            for item in items:  # tuples: most have one key, and a set costs 4 times as much
                keys = index.get(item, ())
                keys = keys + (key,) if claiming else tuple(k for k in keys if k != key)
                if keys:
                    index[item] = keys
                else:
                    del index[item]

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        # No need for `changed`: the changed names and addresses say it, one by one.
        if snapshot:  # a new table of everything held
            base, names, addresses = NameTable(), self._claims, self._holders
        elif self._changed_names or self._changed_addresses:
            base, names, addresses = self.table, self._changed_names, self._changed_addresses
        else:
            return
        self.table = NameTable(
            base.names.updated({name: self._addresses(name) for name in names}),
            base.networks_of.updated({a: self._network(a) for a in addresses}))
        self._changed_names, self._changed_addresses = set(), set()

    def _addresses(self, name: tuple[str, str]):
        """(v4, v6) of the endpoints claiming (network, name); None: none does."""
        if name not in self._claims:
            return None
        endpoints = [self._endpoints[k]
                     for k in sorted(self._claims[name], key=self._arrival.__getitem__)]
        return (tuple(dict.fromkeys(a for e in endpoints for a in e.v4)),
                tuple(dict.fromkeys(a for e in endpoints for a in e.v6)))

    def _network(self, address: str) -> str | None:
        """The network of the last endpoint to arrive holding `address`."""
        if address not in self._holders:
            return None
        return self._endpoints[max(self._holders[address], key=self._arrival.__getitem__)].network
