"""Calico IPAM allocation, as libcalico-go's lib/ipam (calico-datastore.md §4).

auto_assign takes an address from a block affine to this node, else claims
a new block for the node, else (strict affinity off, every pool's blocks
claimed) borrows one from another node's block.  assign_ip takes a given
address; release_ips and release_by_handle give addresses back.

For speed each process remembers, per pool, the affine block it last
allocated from (and its etcd revision) and which blocks it saw full.  A
remembered block is written with a compare-and-swap on that revision, so a
stale memory costs one re-read and never a wrong answer.
"""

import logging
import random
import threading
import time
from typing import NamedTuple

from netaddr import AddrFormatError, IPAddress, IPNetwork

from datastore.etcd import Etcd
from datastore.resources import Resources
from datastore.retry import attempts
from ipam import handles
from ipam.blocks import CONFIRMED, AffinityMismatch, AllocationBlock, OrdinalInUse, block_key, \
    cidr_from_key
from ipam.errors import (AddressInUse, AddressNotInPool, InvalidRequest, NoPoolsConfigured,
                         PoolNotFound, PoolsExhausted)
from ipam.pools import Pool, describe, list_pools, node_labels
from ipam.store import Affinity, BlockStore, BlockTaken, Conflict

LOG = logging.getLogger(__name__)


class BlockUsage(NamedTuple):
    cidr: IPNetwork
    host: str | None  # the node the block is affine to
    in_use: int
    size: int


class PoolUsage(NamedTuple):
    pool: Pool | None  # None: blocks left behind by deleted pools
    blocks: list[BlockUsage]

    @property
    def in_use(self) -> int:
        return sum(b.in_use for b in self.blocks)


def parse_ip(text) -> IPAddress:
    try:
        return IPAddress(str(text))
    except (AddrFormatError, ValueError):
        raise InvalidRequest(f"{text!r} is not an IP address") from None


def fnv32(data: bytes) -> int:
    """FNV-1 32-bit hash (Go's hash/fnv New32), libcalico-go's per-host seed."""
    value = 0x811C9DC5
    for byte in data:
        value = (value * 0x01000193) & 0xFFFFFFFF
        value ^= byte
    return value


class BlockWalk:
    """The order in which a node visits a pool's blocks (randomBlockGenerator):
    from a start that is stable per node, wrapping round, so that hosts
    spread over the pool instead of racing for the same blocks."""

    def __init__(self, pool: Pool, node: str):
        bits = 32 if pool.version == 4 else 128
        self.pool = pool
        self.count = 1 << (pool.block_size - pool.cidr.prefixlen)
        self.step = 1 << (bits - pool.block_size)
        # Single-address blocks: a fixed start per host would make every claim
        # walk the same ever-longer run of taken blocks (libcalico-go >= 3.8).
        seed = time.time_ns() if pool.block_size == bits else fnv32(node.encode())
        self.start = random.Random(seed).randrange(self.count)

    def __iter__(self):
        for i in range(self.count):
            index = (self.start + i) % self.count
            yield IPNetwork((self.pool.cidr.first + index * self.step, self.pool.block_size),
                            self.pool.version)

    def position(self, cidr: IPNetwork) -> int:
        """Where cidr comes in this walk."""
        return ((cidr.first - self.pool.cidr.first) // self.step - self.start) % self.count


def _pool_of(cidr: IPNetwork, pools: list[Pool]) -> Pool | None:
    return next((p for p in pools if cidr in p.cidr), None)


class Ipam:
    def __init__(self, etcd: Etcd, node: str, resources: Resources | None = None):
        self.etcd = etcd
        self.node = node
        self.resources = resources or Resources(etcd)
        self.store = BlockStore(etcd)
        self._room = {}  # pool name -> (block, revision): our affine block that had room
        self._full = {}  # block key -> revision at which the block was seen full
        self._lock = threading.Lock()

    # -- auto-assignment --------------------------------------------------

    def auto_assign(self, version: int, handle_id: str | None, attrs: dict | None,
                    pools: list[str] | None = None) -> IPAddress:
        """One address of the given IP version for this node.

        pools: names or CIDRs of the pools to use, in order (their
        nodeSelectors are then ignored, as in libcalico-go); default: every
        enabled pool whose nodeSelector selects this node.
        """
        chosen = self._pools_for(version, pools)
        ip = self._from_remembered_block(chosen, handle_id, attrs)
        if ip is not None:
            return ip
        revisions = self.store.block_revisions(version)
        ip = self._from_affine_blocks(version, chosen, revisions, handle_id, attrs)
        if ip is not None:
            return ip
        config = self.store.config()
        ip = self._from_new_block(chosen, set(revisions), config, handle_id, attrs)
        if ip is not None:
            return ip
        ip = self._borrow(chosen, revisions, config, handle_id, attrs)
        if ip is not None:
            return ip
        strict = " (strict affinity is on: no borrowing from other nodes' blocks)" \
            if config.strict_affinity else ""
        raise PoolsExhausted(
            f"no free IPv{version} address left in Calico IP pool(s) {describe(chosen)}"
            f"{strict}; release addresses or add a pool, e.g. "
            "`calico-libnetwork pool create <cidr>`")

    def _pools_for(self, version: int, requested: list[str] | None) -> list[Pool]:
        every = list_pools(self.resources)
        if requested:
            return [self._requested_pool(ref, version, every) for ref in requested]
        of_version = [p for p in every if p.version == version]
        enabled = [p for p in of_version if not p.disabled]
        if not enabled:
            raise NoPoolsConfigured(version, f" and enabled ({describe(of_version)})"
                                    if of_version else "")
        if all(p.selects_every_node for p in enabled):  # skip reading the Node
            return enabled
        labels = node_labels(self.resources, self.node)
        chosen = [p for p in enabled if p.selects(labels)]
        if not chosen:
            selectors = ", ".join(f"{p.name}: {p.node_selector}" for p in enabled)
            raise NoPoolsConfigured(version, f" for node {self.node} (labels {labels} match "
                                    f"no pool's nodeSelector: {selectors})")
        return chosen

    @staticmethod
    def _requested_pool(ref: str, version: int, every: list[Pool]) -> Pool:
        pool = next((p for p in every if p.name == ref), None)
        if pool is None:
            try:
                pool = next((p for p in every if p.cidr == IPNetwork(ref).cidr), None)
            except (AddrFormatError, ValueError):
                pass
        if pool is None:
            raise PoolNotFound(f"there is no Calico IP pool {ref!r}; pools: {describe(every)}")
        if pool.version != version:
            raise InvalidRequest(f"Calico IP pool {pool} is not an IPv{version} pool")
        if pool.disabled:
            raise PoolNotFound(f"Calico IP pool {pool} is disabled; enable it or use "
                               "another pool")
        return pool

    def _from_remembered_block(self, chosen, handle_id, attrs) -> IPAddress | None:
        for pool in chosen:
            with self._lock:
                remembered = self._room.pop(pool.name, None)
            if remembered and remembered[0].cidr in pool.cidr:
                ip = self._assign_in(pool, remembered[0].cidr, remembered, handle_id, attrs,
                                     affinity_check=True)
                if ip is not None:
                    return ip
        return None

    def _from_affine_blocks(self, version, chosen, revisions, handle_id, attrs):
        """Step 1: the blocks this node already holds, in key order."""
        for aff in self.store.affinities(self.node, version):
            pool = _pool_of(aff.cidr, chosen)
            key = block_key(aff.cidr)
            if pool is None or (aff.state == CONFIRMED and key in revisions
                                and self._full.get(key) == revisions[key]):
                continue  # not asked for, or unchanged since we saw it full
            ip = self._from_affinity(aff, pool, handle_id, attrs)
            if ip is not None:
                return ip
        return None

    def _from_affinity(self, aff: Affinity | None, pool, handle_id, attrs):
        for _ in attempts(f"using block {aff.cidr}"):
            if aff is None:
                return None
            try:
                found = self.store.block_from_affinity(aff)
            except BlockTaken:
                return None
            except Conflict:
                aff = self.store.get_affinity(aff.node, aff.cidr)
                continue
            return self._assign_in(pool, aff.cidr, found, handle_id, attrs,
                                   affinity_check=True)

    def _from_new_block(self, chosen, taken: set[str], config, handle_id, attrs):
        """Step 2: claim a block nobody has yet (pending -> confirmed affinity)."""
        if not config.auto_allocate_blocks:
            return None
        for _ in attempts("claiming a new block"):
            candidate = self._unclaimed_block(chosen, taken)
            if candidate is None:
                return None
            pool, cidr = candidate
            taken.add(block_key(cidr))  # whatever happens, don't propose it again
            try:
                claimed = self.store.claim_affine_block(
                    self.store.pending_affinity(self.node, cidr))
            except (BlockTaken, Conflict):
                continue
            LOG.info("node %s claimed block %s of pool %s", self.node, cidr, pool.name)
            ip = self._assign_in(pool, cidr, claimed, handle_id, attrs,
                                 affinity_check=config.strict_affinity)
            if ip is not None:
                return ip

    def _unclaimed_block(self, chosen, taken):
        for pool in chosen:
            for cidr in BlockWalk(pool, self.node):
                if block_key(cidr) not in taken:
                    return pool, cidr
        return None

    def _borrow(self, chosen, revisions, config, handle_id, attrs):
        """Step 3: no block is left to claim; take a free address from any
        existing block, visited in this node's walk order."""
        if config.strict_affinity:
            return None
        stored = [cidr_from_key(key) for key, revision in revisions.items()
                  if self._full.get(key) != revision]  # skip blocks known full
        for pool in chosen:
            walk = BlockWalk(pool, self.node)
            for cidr in sorted((c for c in stored if c in pool.cidr), key=walk.position):
                ip = self._assign_in(pool, cidr, None, handle_id, attrs, affinity_check=False)
                if ip is not None:
                    LOG.info("node %s borrowed %s from block %s", self.node, ip, cidr)
                    return ip
        return None

    def _assign_in(self, pool, cidr, found, handle_id, attrs, affinity_check):
        """One address from block cidr; None if it has no room for us.
        found: the (block, revision) already read, if any."""
        for _ in attempts(f"assigning an address in block {cidr}"):
            if found is None:
                found = self.store.get_block(cidr)
                if found is None:
                    return None
            block, revision = found
            found = None
            try:
                ips = block.auto_assign(1, handle_id, attrs, self.node, affinity_check)
            except AffinityMismatch:
                return None
            if not ips:
                self._full[block_key(cidr)] = revision
                return None
            try:
                revision = self._write_assignment(block, revision, handle_id, len(ips))
            except Conflict:
                continue
            self._remember(pool, block, revision)
            return ips[0]

    def _write_assignment(self, block, revision, handle_id, num) -> int:
        # The handle is counted up before the block write (libcalico-go's
        # order): a failure in between leaves a handle that overcounts, never
        # an allocation its handle does not know about.
        if handle_id:
            handles.increment(self.etcd, handle_id, block.cidr, num)
        try:
            return self.store.update_block(block, revision)
        except Conflict:
            if handle_id:
                handles.decrement(self.etcd, handle_id, block.cidr, num)
            raise

    def _remember(self, pool, block: AllocationBlock, revision: int) -> None:
        if not block.free:
            self._full[block_key(block.cidr)] = revision
        elif block.is_affine_to(self.node):
            with self._lock:
                self._room[pool.name] = (block, revision)

    def _refresh_remembered(self, block: AllocationBlock, revision: int | None) -> None:
        """After our own write to block: a remembered copy of it stays
        current, so the next allocation does not pay a failed write and a
        re-read (Docker releases and requests addresses in turn)."""
        with self._lock:
            for name, (known, _) in list(self._room.items()):
                if known.cidr == block.cidr:
                    if revision is None:
                        del self._room[name]
                    else:
                        self._room[name] = (block, revision)

    # -- a given address ----------------------------------------------

    def assign_ip(self, ip, handle_id: str | None, attrs: dict | None) -> IPAddress:
        """Allocate exactly ip (docker run --ip).  It must be in an enabled
        pool; if its block does not exist yet, this node claims it."""
        ip = parse_ip(ip)
        every = list_pools(self.resources)
        pool = _pool_of(IPNetwork(ip), every)
        if pool is None or pool.disabled:
            enabled = [p for p in every if not p.disabled]
            where = f"only in disabled pool {pool}" if pool else "not in any Calico IP pool"
            raise AddressNotInPool(f"{ip} is {where}; enabled pools: {describe(enabled)}")
        cidr = IPNetwork((int(ip), pool.block_size), ip.version).cidr
        strict = self.store.config().strict_affinity
        for _ in attempts(f"assigning {ip}"):
            found = self.store.get_block(cidr)
            if found is None:
                try:
                    found = self.store.claim_affine_block(
                        self.store.pending_affinity(self.node, cidr))
                except (BlockTaken, Conflict):
                    continue
            block, revision = found
            try:
                block.assign(ip, handle_id, attrs, self.node, affinity_check=strict)
            except OrdinalInUse:
                raise AddressInUse(_in_use_message(ip, block)) from None
            except AffinityMismatch:
                raise InvalidRequest(
                    f"{ip} is in block {cidr} of node {block.host or '(none)'} and strict "
                    "affinity is on, so this node cannot use it; pick another address")
            try:
                revision = self._write_assignment(block, revision, handle_id, 1)
            except Conflict:
                continue
            self._remember(pool, block, revision)
            return ip

    # -- release --------------------------------------------------------

    def release_ips(self, ips) -> list[IPAddress]:
        """Free addresses; returns those that were not allocated."""
        not_allocated = []
        for cidr, group in self._group_by_block([parse_ip(ip) for ip in ips]).items():
            if cidr is None:
                not_allocated += group
            else:
                not_allocated += self._release_in_block(cidr, group)
        return not_allocated

    def _release_in_block(self, cidr, ips) -> list[IPAddress]:
        for _ in attempts(f"releasing addresses in block {cidr}"):
            found = self.store.get_block(cidr)
            if found is None:
                return list(ips)
            block, revision = found
            result = block.release(ips)
            if not result.freed:
                return result.not_allocated
            try:
                revision = self.store.store_released(block, revision)
            except Conflict:
                continue
            self._refresh_remembered(block, revision)
            for handle_id, num in result.by_handle.items():
                handles.decrement(self.etcd, handle_id, cidr, num)
            return result.not_allocated

    def release_by_handle(self, handle_id: str) -> int:
        """Free every address carrying handle_id and delete the handle; how
        many addresses were freed."""
        counts = handles.get(self.etcd, handle_id)
        freed_total = 0
        for cidr_text, counted in (counts or {}).items():
            cidr = IPNetwork(cidr_text)
            freed = self._release_handle_in_block(handle_id, cidr)
            freed_total += freed
            # Count the block down fully even if the handle overcounted (an
            # assignment that failed after counting up), so it reaches zero.
            handles.decrement(self.etcd, handle_id, cidr, max(freed, counted))
        return freed_total

    def _release_handle_in_block(self, handle_id, cidr) -> int:
        for _ in attempts(f"releasing handle {handle_id} in block {cidr}"):
            found = self.store.get_block(cidr)
            if found is None:
                return 0
            block, revision = found
            freed = block.release_by_handle(handle_id)
            if not freed:
                return 0
            try:
                revision = self.store.store_released(block, revision)
            except Conflict:
                continue
            self._refresh_remembered(block, revision)
            return freed

    def _group_by_block(self, ips) -> dict[IPNetwork | None, list[IPAddress]]:
        """Addresses by the block that holds them (None: no block can)."""
        pools = list_pools(self.resources)
        stored = {}  # version -> block CIDRs, listed only for addresses in no pool
        groups = {}
        for ip in ips:
            pool = _pool_of(IPNetwork(ip), pools)
            if pool is not None:
                cidr = IPNetwork((int(ip), pool.block_size), ip.version).cidr
            else:  # its pool was deleted: look for a block left behind
                if ip.version not in stored:
                    stored[ip.version] = [cidr_from_key(k)
                                          for k in self.store.block_revisions(ip.version)]
                cidr = next((c for c in stored[ip.version] if ip in c), None)
            groups.setdefault(cidr, []).append(ip)
        return groups

    # -- read-only views ------------------------------------------------

    def allocation(self, ip) -> tuple[str | None, dict] | None:
        """(handle id, attributes) of an allocated address; None if it is free."""
        ip = parse_ip(ip)
        cidr = next(iter(self._group_by_block([ip])))
        found = None if cidr is None else self.store.get_block(cidr)
        return None if found is None else found[0].allocation(ip)

    def usage(self) -> list[PoolUsage]:
        """Pools -> blocks -> addresses in use, for `ipam show`."""
        pools = list_pools(self.resources)
        by_pool = {p.name: [] for p in pools}
        orphans = []
        for _, block, _ in self.store.blocks():
            pool = _pool_of(block.cidr, pools)
            (by_pool[pool.name] if pool else orphans).append(
                BlockUsage(block.cidr, block.host, block.in_use, block.size))
        result = [PoolUsage(p, by_pool[p.name]) for p in pools]
        if orphans:
            result.append(PoolUsage(None, orphans))
        return result


def _in_use_message(ip, block: AllocationBlock) -> str:
    handle_id, attrs = block.allocation(ip)
    owner = ", ".join(f"{k} {v}" for k, v in (
        ("node", attrs.get("node")), ("container", attrs.get("endpoint-name")),
        ("handle", handle_id)) if v)
    return (f"{ip} is already in use{f' ({owner})' if owner else ''}; "
            "pick another address or remove the container holding it")
