"""Docker networks as the plugin remembers them, in etcd.

dockerd never replays CreateNetwork (not after a plugin restart, not after
its own), and each host gives the same network a different NetworkID, so the
plugin keeps what CreateNetwork told it under
/calico/libnetwork/v1/networks/<NetworkID>, with the node that made it and,
once learned, the network's name (which is what ties hosts together).
"""

import json
from dataclasses import asdict, dataclass, field, fields

from datastore.etcd import Etcd
from datastore.retry import attempts

PREFIX = "/calico/libnetwork/v1/networks/"
_CAS_RETRIES = 20


@dataclass
class Network:
    id: str
    node: str
    ipv6: bool = False
    ipv4_pools: list = field(default_factory=list)
    ipv6_pools: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    name: str | None = None
    revision: int | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("revision")
        return json.dumps(data, sort_keys=True)


class Networks:
    def __init__(self, etcd: Etcd):
        self.etcd = etcd

    def add(self, network: Network) -> None:
        """Record a new network; replaying the same CreateNetwork is a no-op."""
        if self.etcd.create(PREFIX + network.id, network.to_json()) is None:
            existing = self.get(network.id)
            if existing is not None and existing.node == network.node:
                network.name = network.name or existing.name
                self.etcd.update(PREFIX + network.id, network.to_json(), existing.revision)

    def get(self, network_id: str) -> Network | None:
        kv = self.etcd.get(PREFIX + network_id)
        return None if kv is None else _from_kv(kv)

    def list(self) -> list[Network]:
        kvs, _ = self.etcd.get_prefix(PREFIX)
        return [_from_kv(kv) for kv in kvs]

    def set_name(self, network_id: str, name: str) -> Network | None:
        """Record the network's name; the network as written, None when it
        is not (any more) recorded.  TooManyConflicts when every attempt lost."""
        for _ in attempts(f"recording the name of network {network_id[:12]}", _CAS_RETRIES):
            network = self.get(network_id)
            if network is None or network.name == name:
                return network
            network.name = name
            if self.etcd.update(PREFIX + network_id, network.to_json(), network.revision):
                return network

    def remove(self, network_id: str) -> None:
        self.etcd.delete(PREFIX + network_id)

    def name_in_use_elsewhere(self, name: str, network_id: str) -> bool:
        return any(n.name == name and n.id != network_id for n in self.list())


def _from_kv(kv) -> Network:
    data = json.loads(kv.value)
    known = {f.name for f in fields(Network)} - {"revision"}
    # Fields a newer version added are ignored, not fatal.
    return Network(revision=kv.mod_revision, **{k: v for k, v in data.items() if k in known})
