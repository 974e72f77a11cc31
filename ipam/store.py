"""The IPAM records in etcd and the compare-and-swap steps over them
(libcalico-go's blockReaderWriter, calico-datastore.md §4.4 and §4.9).

Every write is a create (key must not exist) or an update/delete on the
mod_revision last read, one key at a time here; a block and the handles
its addresses name are written together in one multi-key transaction by
ipam/group_commit.py (datastore.etcd.Etcd.commit).  Claiming a
block is the pending -> confirmed affinity protocol, so a claim that died
half-way is found and finished (or undone) by the next one.
"""

import logging
from typing import NamedTuple

from netaddr import IPNetwork

from datastore.etcd import Etcd
from datastore.retry import attempts
from ipam.blocks import (BLOCKS_PREFIX, CONFIG_KEY, CONFIRMED, PENDING, PENDING_DELETION,
                         AllocationBlock, IpamConfig, affinity_key, affinity_prefix,
                         affinity_state, affinity_value, block_key, block_prefix,
                         parse_affinity_key)

LOG = logging.getLogger(__name__)


class Conflict(Exception):
    """A compare-and-swap lost against another writer: re-read and retry."""


class BlockTaken(Exception):
    """The block belongs to another host (or to none): look elsewhere."""


class Affinity(NamedTuple):
    node: str
    cidr: IPNetwork
    state: str
    revision: int


class BlockStore:
    def __init__(self, etcd: Etcd):
        self.etcd = etcd

    # -- blocks ---------------------------------------------------------

    def get_block(self, cidr: IPNetwork) -> tuple[AllocationBlock, int] | None:
        kv = self.etcd.get(block_key(cidr))
        return None if kv is None else (AllocationBlock.from_json(kv.value), kv.mod_revision)

    def blocks(self, version: int | None = None) -> list[tuple[str, AllocationBlock, int]]:
        """(key, block, revision) of every stored block, in key order."""
        prefix = block_prefix(version) if version else BLOCKS_PREFIX
        kvs, _ = self.etcd.get_prefix(prefix)
        return [(kv.key, AllocationBlock.from_json(kv.value), kv.mod_revision) for kv in kvs]

    def block_revisions(self, version: int) -> dict[str, int]:
        """Block key -> mod_revision for every block: a listing without values,
        cheap enough to take on every slow-path allocation."""
        kvs, _ = self.etcd.get_prefix(block_prefix(version), keys_only=True)
        return {kv.key: kv.mod_revision for kv in kvs}

    def update_block(self, block: AllocationBlock, revision: int) -> int:
        new_revision = self.etcd.update(block_key(block.cidr), block.to_json(), revision)
        if new_revision is None:
            raise Conflict(f"block {block.cidr} changed")
        return new_revision

    def delete_block(self, block: AllocationBlock, revision: int) -> None:
        if not self.etcd.delete(block_key(block.cidr), revision):
            raise Conflict(f"block {block.cidr} changed")

    # -- affinities -----------------------------------------------------

    def affinities(self, node: str | None = None, version: int | None = None) -> list[Affinity]:
        """Block affinities of one node (or of all), in key order."""
        kvs, _ = self.etcd.get_prefix(affinity_prefix(node, version))
        found = []
        for kv in kvs:
            parsed = parse_affinity_key(kv.key)
            if parsed:  # skip the bare IPAMHostKey /calico/ipam/v2/host/<node>
                found.append(Affinity(*parsed, affinity_state(kv.value), kv.mod_revision))
        return found

    def get_affinity(self, node: str, cidr: IPNetwork) -> Affinity | None:
        kv = self.etcd.get(affinity_key(node, cidr))
        return None if kv is None else Affinity(node, cidr, affinity_state(kv.value),
                                                kv.mod_revision)

    def _set_state(self, aff: Affinity, state: str) -> Affinity:
        revision = self.etcd.update(affinity_key(aff.node, aff.cidr),
                                    affinity_value(state), aff.revision)
        if revision is None:
            raise Conflict(f"affinity of {aff.node} for {aff.cidr} changed")
        return aff._replace(state=state, revision=revision)

    def _delete_affinity(self, aff: Affinity) -> bool:
        return self.etcd.delete(affinity_key(aff.node, aff.cidr), aff.revision)

    def pending_affinity(self, node: str, cidr: IPNetwork) -> Affinity:
        """Step 1 of a claim: our affinity for cidr, created as pending (or an
        existing one, marked pending unless already confirmed)."""
        key = affinity_key(node, cidr)
        for _ in attempts(f"claiming block {cidr}"):
            revision = self.etcd.create(key, affinity_value(PENDING))
            if revision is not None:
                return Affinity(node, cidr, PENDING, revision)
            aff = self.get_affinity(node, cidr)
            if aff is None:
                continue
            if aff.state == CONFIRMED:
                return aff
            try:
                return self._set_state(aff, PENDING)
            except Conflict:
                continue

    def claim_affine_block(self, aff: Affinity) -> tuple[AllocationBlock, int]:
        """Step 2 of a claim: create the block affine to aff.node, then confirm
        the affinity.  Creating the block is the ownership decision: whoever
        creates it first owns it; a loser drops its pending affinity."""
        block = AllocationBlock.new(aff.cidr, "host:" + aff.node)
        revision = self.etcd.create(block_key(aff.cidr), block.to_json())
        if revision is None:
            found = self.get_block(aff.cidr)
            if found is None:
                raise Conflict(f"block {aff.cidr} vanished while being claimed")
            block, revision = found
            self._drop_if_stale(aff, block)
        if aff.state != CONFIRMED:
            self._confirm(aff)
        return block, revision

    def _drop_if_stale(self, aff: Affinity, block: AllocationBlock) -> None:
        """Delete our affinity and raise BlockTaken when the block is affine
        to another host (or none): the block is the source of truth."""
        if not block.is_affine_to(aff.node):
            self._delete_affinity(aff)
            raise BlockTaken(f"block {aff.cidr} is affine to {block.affinity or 'no host'}, "
                             f"not {aff.node}; dropped {aff.node}'s affinity for it")

    def _confirm(self, aff: Affinity) -> None:
        try:
            self._set_state(aff, CONFIRMED)
        except Conflict:
            current = self.get_affinity(aff.node, aff.cidr)
            if current is None or current.state != CONFIRMED:
                raise
            # Another claimer on the same node confirmed it first: fine.

    def block_from_affinity(self, aff: Affinity) -> tuple[AllocationBlock, int]:
        """The block behind one of our affinities, repairing a claim that died
        half-way; BlockTaken if the affinity turns out to be stale."""
        found = self.get_block(aff.cidr)
        if found is None:
            # The claim died before its block was written: finish it.
            if aff.state != PENDING:
                aff = self._set_state(aff, PENDING)
            return self.claim_affine_block(aff)
        block, revision = found
        self._drop_if_stale(aff, block)
        if aff.state != CONFIRMED:
            # The claim died after writing the block.  Rewriting the block
            # unchanged bumps its revision, so any writer still holding an
            # older copy must re-read before it can write; then confirm.
            aff = self._set_state(aff, PENDING)
            revision = self.update_block(block, revision)
            self._set_state(aff, CONFIRMED)
        return block, revision

    def release_affinity(self, node: str, cidr: IPNetwork, require_empty: bool) -> bool:
        """Give up node's affinity for a block: an empty block is deleted, a
        used one keeps its addresses but no longer belongs to any host.
        False (and nothing changed) if require_empty and the block is in use."""
        for _ in attempts(f"releasing {node}'s affinity for block {cidr}"):
            aff = self.get_affinity(node, cidr)
            if aff is None:
                return True
            found = self.get_block(cidr)
            if found is None or not found[0].is_affine_to(node):
                if self._delete_affinity(aff):  # stale: nothing to hand back
                    return True
                continue
            block, revision = found
            if require_empty and not block.empty:
                return False
            try:
                aff = self._set_state(aff, PENDING_DELETION)
                if block.empty:
                    self.delete_block(block, revision)
                else:
                    block.affinity = None
                    self.update_block(block, revision)
            except Conflict:
                continue
            if self._delete_affinity(aff):
                return True

    def release_affinities(self, within: IPNetwork | None = None, node: str | None = None,
                           require_empty: bool = False) -> list[IPNetwork]:
        """Release the affinities of node (or of every node) for blocks inside
        within (or anywhere); the blocks kept because they were in use."""
        kept = []
        for aff in self.affinities(node):
            if within is None or aff.cidr in within:
                if not self.release_affinity(aff.node, aff.cidr, require_empty):
                    kept.append(aff.cidr)
        return kept

    # -- config ---------------------------------------------------------

    def config(self) -> IpamConfig:
        kv = self.etcd.get(CONFIG_KEY)
        return IpamConfig.from_json(None if kv is None else kv.value)
