"""Helpers for IPAM tests: whole-datastore consistency checks and small setup steps."""

from dataclasses import replace

from datastore.resources import Resources
from ipam.blocks import CONFIG_KEY, CONFIRMED, config_value, handle_blocks, handle_key
from ipam.pools import get_pool, list_pools
from ipam.retry import attempts
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
        errors += block.invariant_errors(key, pools)
        for handle_id, num in block.handle_counts().items():
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


def stored_handles(etcd) -> dict[str, dict[str, int]]:
    """Every handle's block counts."""
    kvs, _ = etcd.get_prefix(handle_key(""))
    return {kv.key[len(handle_key("")):]: handle_blocks(kv.value) for kv in kvs}


def affine_blocks(etcd, node) -> dict:
    """Block CIDR -> affinity state, for the blocks affine to node."""
    return {a.cidr: a.state for a in BlockStore(etcd).affinities(node)}


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
