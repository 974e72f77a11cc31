"""Which names resolve to which addresses, per network, from the workload
endpoints in etcd (their dns-names and network-name annotations).

A View of the agent's watch (agent/watch.py): apply() records one endpoint
key, batch_done() publishes a new immutable NameTable that the responder's
thread reads without locks (one reference assignment).
"""

import json
import logging
from dataclasses import dataclass, field

from datastore.annotations import DNS_NAMES, NETWORK_NAME
from datastore.resources import PREFIX, Resource

LOG = logging.getLogger(__name__)

WEP_PREFIX = PREFIX + "workloadendpoints/"


@dataclass(frozen=True, slots=True)
class NamedEndpoint:
    network: str  # the Docker network's name (else its first profile)
    names: tuple[str, ...]  # lowercased, no trailing dot
    v4: tuple[str, ...]
    v6: tuple[str, ...]

    @classmethod
    def from_resource(cls, res: Resource) -> "NamedEndpoint | None":
        annotations = res.metadata.get("annotations") or {}
        network = annotations.get(NETWORK_NAME) or \
            next(iter(res.spec.get("profiles") or ()), None)
        if not network:
            return None
        try:
            names = json.loads(annotations.get(DNS_NAMES) or "[]")
        except ValueError:
            names = []
        addresses = [str(n).split("/")[0] for n in res.spec.get("ipNetworks") or ()]
        return cls(network.lower(),
                   tuple(str(n).lower().rstrip(".") for n in names if isinstance(n, str)),
                   tuple(a for a in addresses if ":" not in a),
                   tuple(a for a in addresses if ":" in a))


@dataclass(frozen=True)
class NameTable:
    """network -> name -> (v4 addresses, v6 addresses); address -> network."""

    names: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = \
        field(default_factory=dict)
    networks_of: dict[str, str] = field(default_factory=dict)

    def network_of(self, address: str) -> str | None:
        """The network of the endpoint that holds `address` (a querier)."""
        return self.networks_of.get(address)

    def lookup(self, network: str, qname: str):
        """(v4, v6) for `qname` asked from `network`: `<name>` or
        `<name>.<network>`, as Docker's embedded DNS answers; None when the
        name is not one of that network's containers."""
        qname = qname.lower().rstrip(".")
        names = self.names.get(network)
        if not names:
            return None
        found = names.get(qname)
        if found is None and qname.endswith("." + network):
            found = names.get(qname[:-len(network) - 1])
        return found

    @classmethod
    def build(cls, endpoints) -> "NameTable":
        names: dict[str, dict[str, tuple[list, list]]] = {}
        networks_of = {}
        for endpoint in endpoints:
            for address in endpoint.v4 + endpoint.v6:
                networks_of[address] = endpoint.network
            per_network = names.setdefault(endpoint.network, {})
            for name in endpoint.names:
                v4, v6 = per_network.setdefault(name, ([], []))
                v4.extend(a for a in endpoint.v4 if a not in v4)
                v6.extend(a for a in endpoint.v6 if a not in v6)
        frozen = {net: {name: (tuple(v4), tuple(v6)) for name, (v4, v6) in by_name.items()}
                  for net, by_name in names.items()}
        return cls(frozen, networks_of)


class NameIndex:
    """The agent's watch View that keeps `table` up to date."""

    prefixes = (WEP_PREFIX,)

    def __init__(self):
        self.table = NameTable()
        self.reset()

    def reset(self) -> None:
        self._endpoints: dict[str, NamedEndpoint] = {}

    def apply(self, key: str, value: bytes | None) -> bool:
        """Record one key; False when no answer changes (not an endpoint, or
        one whose names, network and addresses are as they were)."""
        if not key.startswith(WEP_PREFIX):
            return False
        endpoint = None
        if value is not None:
            try:
                endpoint = NamedEndpoint.from_resource(Resource.from_dict(json.loads(value)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                LOG.warning("no names from unreadable %s: %s", key, exc)
        if self._endpoints.get(key) == endpoint:
            return False
        if endpoint is None:
            del self._endpoints[key]
        else:
            self._endpoints[key] = endpoint
        return True

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if changed:
            self.table = NameTable.build(self._endpoints.values())
