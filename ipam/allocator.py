"""Calico IPAM allocation, as libcalico-go's lib/ipam (calico-datastore.md §4).

auto_assign takes an address from a block affine to this node, else claims
a new block for the node, else (strict affinity off, every pool's blocks
claimed) borrows one from another node's block.  assign_ip takes a given
address; release_ips and release_by_handle give addresses back.

For speed each process remembers, per pool, the affine block it last
allocated from and which blocks it saw full, and writes each block through
one BlockWriter (group_commit.py): concurrent requests share one write, an
address and its handle are written in one transaction, and the writer's
copy of the block makes the next write need no read.  Every write compares
the block's revision, and an answer that writes nothing (in use, full) is
checked with a read of the block, so a copy gone stale because another
host wrote the block costs a retry or a read, never a wrong answer.
"""

import logging
import random
import threading
import time
from typing import NamedTuple, Protocol

from netaddr import AddrFormatError, IPAddress, IPNetwork

from datastore.etcd import Etcd
from datastore.resources import Resources
from datastore.retry import attempts
from ipam import handles
from ipam.blocks import CONFIRMED, AffinityMismatch, AllocationBlock, OrdinalInUse, block_key, \
    cidr_from_key
from ipam.group_commit import BlockGone, BlockWriter, HandleExists, KnownHandles
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


class Pools(Protocol):
    """Where the pools come from between etcd reads: the plugin worker's
    PoolCache, the agent's routing view (ClusterState, via the Reconciler)."""

    def current(self) -> list[Pool] | None: ...  # None: read etcd


class Ipam:
    def __init__(self, etcd: Etcd, node: str, resources: Resources | None = None,
                 pool_cache: Pools | None = None):
        self.etcd = etcd
        self.node = node
        self.resources = resources or Resources(etcd)
        self.pool_cache = pool_cache
        self.store = BlockStore(etcd)
        self.handles = KnownHandles()
        self._writers = {}  # block CIDR -> its BlockWriter (group_commit.py)
        self._room = {}  # pool name -> CIDR of our affine block that had room
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
        try:
            return self._auto_assign_in(version, chosen, handle_id, attrs)
        except PoolsExhausted:
            # The pool cache may not show a pool created or enabled a moment ago.
            fresh = None if self.pool_cache is None else \
                self._choose_pools(version, pools, self.pools(fresh=True))
            if fresh in (None, chosen):
                raise
        return self._auto_assign_in(version, fresh, handle_id, attrs)

    def _auto_assign_in(self, version, chosen, handle_id, attrs) -> IPAddress:
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

    def pools(self, fresh: bool = False) -> list[Pool]:
        """Every pool: from the pool cache when it is in step, else (or when
        fresh) read from etcd."""
        cached = None if fresh or self.pool_cache is None else self.pool_cache.current()
        return list_pools(self.resources) if cached is None else cached

    def _pools_for(self, version: int, requested: list[str] | None) -> list[Pool]:
        try:
            return self._choose_pools(version, requested, self.pools())
        except (NoPoolsConfigured, PoolNotFound, InvalidRequest):
            if self.pool_cache is None:
                raise
        # The cache may not show a pool created or changed a moment ago.
        return self._choose_pools(version, requested, self.pools(fresh=True))

    def _choose_pools(self, version, requested, every) -> list[Pool]:
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
            cidr = self._room.get(pool.name)
            if cidr is not None and cidr in pool.cidr:
                ip = self._assign_in(pool, cidr, None, handle_id, attrs, affinity_check=True)
                if ip is not None:
                    return ip
                with self._lock:
                    if self._room.get(pool.name) == cidr:
                        del self._room[pool.name]
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
        seen = {}

        def assign(block):
            ips = block.auto_assign(1, handle_id, attrs, self.node, affinity_check)
            seen.update(free=block.free, ours=block.is_affine_to(self.node))
            return ips
        try:
            ips, revision = self._write(cidr, assign, handle_id, found)
        except (AffinityMismatch, BlockGone):
            return None
        if not seen["free"]:  # full now, or already (no address for us)
            self._full[block_key(cidr)] = revision
        elif seen["ours"]:
            with self._lock:
                self._room[pool.name] = cidr
        return ips[0] if ips else None

    def _write(self, cidr, edit, new_handle=None, found=None):
        """edit(block) written through the block's group commit; (result,
        revision).  A handle the caller gave that already exists is
        counted up first, then the block written alone (libcalico-go's
        order: a failure in between overcounts the handle, never misses an
        address)."""
        with self._lock:
            writer = self._writers.get(cidr)
            if writer is None:
                writer = self._writers[cidr] = BlockWriter(self.etcd, cidr, self.handles)
        if found is not None:
            writer.seed(*found)
        try:
            return writer.run(edit, new_handle)
        except HandleExists:
            pass
        for _ in attempts(f"writing block {cidr} for handle {new_handle}"):
            found = self.store.get_block(cidr)
            if found is None:
                raise BlockGone(str(cidr))
            block, revision = found
            result = edit(block)
            if not result:
                return result, revision
            handles.increment(self.etcd, new_handle, cidr, len(result))
            try:
                revision = self.store.update_block(block, revision)
            except Conflict:
                handles.decrement(self.etcd, new_handle, cidr, len(result))
                continue
            writer.seed(block, revision)
            return result, revision

    # -- a given address ----------------------------------------------

    def assign_ip(self, ip, handle_id: str | None, attrs: dict | None) -> IPAddress:
        """Allocate exactly ip (docker run --ip).  It must be in an enabled
        pool; if its block does not exist yet, this node claims it."""
        ip = parse_ip(ip)
        every = self.pools()
        pool = _pool_of(IPNetwork(ip), every)
        if (pool is None or pool.disabled) and self.pool_cache is not None:
            every = self.pools(fresh=True)
            pool = _pool_of(IPNetwork(ip), every)
        if pool is None or pool.disabled:
            enabled = [p for p in every if not p.disabled]
            where = f"only in disabled pool {pool}" if pool else "not in any Calico IP pool"
            raise AddressNotInPool(f"{ip} is {where}; enabled pools: {describe(enabled)}")
        cidr = IPNetwork((int(ip), pool.block_size), ip.version).cidr
        strict = self.store.config().strict_affinity

        def assign(block):
            try:
                block.assign(ip, handle_id, attrs, self.node, affinity_check=strict)
            except OrdinalInUse:
                raise AddressInUse(_in_use_message(ip, block)) from None
            except AffinityMismatch:
                raise InvalidRequest(
                    f"{ip} is in block {cidr} of node {block.host or '(none)'} and strict "
                    "affinity is on, so this node cannot use it; pick another address") from None
            return [ip]
        claimed = None
        for _ in attempts(f"assigning {ip}"):
            try:
                self._write(cidr, assign, handle_id, claimed)
            except BlockGone:  # this node claims the block
                try:
                    claimed = self.store.claim_affine_block(
                        self.store.pending_affinity(self.node, cidr))
                except (BlockTaken, Conflict):
                    claimed = None
                continue
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
        try:
            result, _ = self._write(cidr, lambda block: block.release(ips))
        except BlockGone:
            return list(ips)
        return result.not_allocated

    def release_by_handle(self, handle_id: str) -> int:
        """Free every address carrying handle_id and delete the handle; how
        many addresses were freed."""
        self.handles.forget(handle_id)  # counted down below, not in the block's commit
        counts = handles.get(self.etcd, handle_id)
        freed_total = 0
        for cidr_text, counted in (counts or {}).items():
            cidr = IPNetwork(cidr_text)
            try:
                freed, _ = self._write(cidr, lambda block: block.release_by_handle(handle_id))
            except BlockGone:
                freed = 0
            freed_total += freed
            # Count the block down fully even if the handle overcounted (an
            # assignment that failed after counting up), so it reaches zero.
            handles.decrement(self.etcd, handle_id, cidr, max(freed, counted))
        return freed_total

    def _group_by_block(self, ips) -> dict[IPNetwork | None, list[IPAddress]]:
        """Addresses by the block that holds them (None: no block can)."""
        pools = self.pools()
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
