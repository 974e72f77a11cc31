"""Helpers for IPAM tests: whole-datastore consistency checks and small setup steps."""

from dataclasses import replace

from datastore.resources import Resources
from ipam.blocks import CONFIG_KEY, CONFIRMED, block_key, handle_blocks, handle_key
from ipam.pools import get_pool, list_pools
from datastore.retry import attempts
from ipam.store import BlockStore


def allocations(etcd) -> dict[str, str | None]:
    """Every allocated address (as a string) -> its handle id, from the blocks."""
    found = {}
    for _, block, _ in BlockStore(etcd).blocks():
        for ordinal, index in enumerate(block.allocations):
            if index is not None:
                found[str(block.ip(ordinal))] = block.attributes[index]["handle_id"]
    return found


def assert_consistent(etcd, exact_handles=True, in_pools=True):
    """Every block keeps the §3.1 invariants; handle records match the blocks
    (exactly, or - after an interrupted write - never undercount); every
    confirmed affinity points at a block affine to its node.

    in_pools: also require each block to be a block of an existing pool.
    """
    store = BlockStore(etcd)
    pools = list_pools(Resources(etcd)) if in_pools else ()
    errors, counted = [], {}
    for key, block, _ in store.blocks():
        errors += invariant_errors(block, key, pools)
        for handle_id, num in handle_counts(block).items():
            counted.setdefault(handle_id, {})[str(block.cidr)] = num
    stored = stored_handles(etcd)
    if exact_handles:
        if stored != counted:
            errors.append(f"handles {stored} != block contents {counted}")
    else:
        for handle_id, blocks in counted.items():
            for cidr, num in blocks.items():
                if stored.get(handle_id, {}).get(cidr, 0) < num:
                    errors.append(f"handle {handle_id} undercounts block {cidr}")
    for aff in store.affinities():
        found = store.get_block(aff.cidr)
        if aff.state == CONFIRMED and (found is None or not found[0].is_affine_to(aff.node)):
            errors.append(f"confirmed affinity {aff} has no block affine to its node")
    assert not errors, "\n".join(errors)


def invariant_errors(block, key: str | None = None, pools=()) -> list[str]:
    """What is wrong with an AllocationBlock (calico-datastore.md §3.1); [] if sound.

    pools: objects with .cidr and .block_size; when given, the block must
    lie in one of them and have its block size.
    """
    errors = []
    if len(block.allocations) != block.size:
        errors.append(f"{len(block.allocations)} allocations for {block.size} addresses")
    free = [o for o, index in enumerate(block.allocations) if index is None]
    if len(set(block.unallocated)) != len(block.unallocated):
        errors.append("unallocated has duplicates")
    if set(block.unallocated) != set(free):
        errors.append("unallocated differs from the free allocations")
    used = {index for index in block.allocations if index is not None}
    if any(not isinstance(i, int) or not 0 <= i < len(block.attributes) for i in used):
        errors.append("an allocation points past the attributes")
    if used != set(range(len(block.attributes))):
        errors.append("an attribute is not referenced by any allocation")
    if key is not None and key != block_key(block.cidr):
        errors.append(f"cidr {block.cidr} does not match key {key}")
    if block.cidr != block.cidr.cidr:
        errors.append(f"cidr {block.cidr} is not masked")
    if pools:
        pool = next((p for p in pools if block.cidr in p.cidr), None)
        if pool is None:
            errors.append(f"block {block.cidr} is in no pool")
        elif block.cidr.prefixlen != pool.block_size:
            errors.append(f"block {block.cidr} is not a /{pool.block_size} of {pool.cidr}")
    return [f"block {block.cidr}: {e}" for e in errors]


def handle_counts(block) -> dict[str, int]:
    """Handle id -> how many addresses of the block carry it."""
    counts = {}
    for index in block.allocations:
        if index is not None:
            handle = block.attributes[index]["handle_id"]
            if handle is not None:
                counts[handle] = counts.get(handle, 0) + 1
    return counts


def stored_handles(etcd) -> dict[str, dict[str, int]]:
    """Every handle's block counts."""
    kvs, _ = etcd.get_prefix(handle_key(""))
    return {kv.key[len(handle_key("")):]: handle_blocks(kv.value) for kv in kvs}


def affine_blocks(etcd, node) -> dict:
    """Block CIDR -> affinity state, for the blocks affine to node."""
    return {a.cidr: a.state for a in BlockStore(etcd).affinities(node)}


def config_value(strict_affinity: bool) -> dict:
    # Never written with auto_allocate_blocks false: that would stop every
    # host, including calico/node, from claiming blocks.
    return {"strict_affinity": strict_affinity, "auto_allocate_blocks": True}


def set_ipam_config(etcd, strict_affinity: bool) -> None:
    """Write the IPAM config (calicoctl ipam configure --strictaffinity)."""
    for _ in attempts("writing the IPAM config"):
        kv = etcd.get(CONFIG_KEY)
        value = config_value(strict_affinity)
        if kv is None:
            if etcd.create(CONFIG_KEY, value) is not None:
                return
        elif etcd.update(CONFIG_KEY, value, kv.mod_revision) is not None:
            return


def enabled_pools(resources, version: int) -> list:
    return [p for p in list_pools(resources, version) if not p.disabled]


def set_disabled(resources, name, disabled=True):
    pool = get_pool(resources, name)
    resources.update(replace(pool, disabled=disabled).to_resource())
