"""What the agent knows of the cluster: nodes, pools, block affinities and
the borrowed addresses in blocks.  ClusterState is the follower's routing
view (datastore/follower.py): pure bookkeeping of the records it is handed,
nothing here talks to etcd; each batch it hands itself to `on_batch` (the
Reconciler).

A key is applied with its full new record (or None when deleted), so events
replayed from an older revision still end in the right state.
"""

from collections.abc import Callable
from dataclasses import dataclass

from netaddr import AddrFormatError, IPAddress, IPNetwork

from datastore.node import Node
from datastore.records import NODES, Kind
from ipam.blocks import (AFFINITIES, BLOCKS, CONFIRMED, AllocationBlock, cidr_from_key,
                         parse_affinity_key)
from ipam.pools import POOLS, Pool


@dataclass(frozen=True)
class Block:
    """What routing needs of an AllocationBlock."""

    cidr: IPNetwork
    host: str | None
    # Addresses allocated to a node other than the block's host (the
    # allocation attribute's secondary.node): each needs a /32 of its own.
    borrowed: tuple[tuple[IPAddress, str], ...] = ()

    @classmethod
    def of(cls, block: AllocationBlock) -> "Block":
        host = block.host
        owners = [(a.get("secondary") or {}).get("node") for a in block.attributes]
        borrowed = []
        for ordinal, index in enumerate(block.allocations):
            if index is not None and index < len(owners) and owners[index] not in (None, host):
                borrowed.append((block.ip(ordinal), owners[index]))
        return cls(block.cidr, host, tuple(borrowed))


class ClusterState:
    kinds = (AFFINITIES, BLOCKS, NODES, POOLS)

    def __init__(self, on_batch: Callable[["ClusterState", bool, bool], None] | None = None):
        self.on_batch = on_batch  # (state, changed, snapshot)
        self.reset()

    def reset(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.pools: dict[str, Pool] = {}
        self.affinities: dict[tuple[str, IPNetwork], str] = {}  # (node, block) -> state
        self.blocks: dict[IPNetwork, Block] = {}

    def on_change(self, kind: Kind, key: str, record) -> bool:
        """Record one key's new record (None: deleted); False if nothing
        the agent routes by changed."""
        if kind is AFFINITIES:
            table, name, value = self.affinities, parse_affinity_key(key), \
                record and record.state
        elif kind is BLOCKS:
            table, name, value = self.blocks, _block_cidr(key), record and Block.of(record)
        elif kind in (NODES, POOLS):
            table = self.nodes if kind is NODES else self.pools
            name, value = key[len(kind.prefix):], record
        else:
            return False
        if name is None or table.get(name) == value:
            return False
        if value is None:
            del table[name]
        else:
            table[name] = value
        return True

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if self.on_batch is not None:
            self.on_batch(self, changed, snapshot)

    def current(self) -> list[Pool]:
        """Every pool by name, as ipam's list_pools(): the agent's Ipam
        reads them here rather than from etcd."""
        return [self.pools[name] for name in sorted(self.pools)]

    def block_owners(self) -> dict[IPNetwork, str]:
        """Each block with a confirmed affinity -> its node.  Should two nodes
        both hold one (a stale affinity), the block record decides."""
        owners = {}
        for (node, cidr), state in self.affinities.items():
            if state != CONFIRMED:
                continue
            if cidr in owners:
                block = self.blocks.get(cidr)
                if block is None or block.host != node:
                    continue
            owners[cidr] = node
        return owners

    def pool_of(self, cidr: IPNetwork) -> Pool | None:
        return next((p for p in self.pools.values() if cidr in p.cidr), None)


def _block_cidr(key: str) -> IPNetwork | None:
    try:
        return cidr_from_key(key)
    except (AddrFormatError, ValueError):
        return None
