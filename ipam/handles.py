"""IPAM handles (/calico/ipam/v2/handle/<id>): for each handle, how many
addresses carry it in each block.  The blocks are the truth and a handle is
an index into them: it is counted up before the block write and down after
the release (calico-datastore.md §4.10), so it may briefly overcount but
never misses an allocation.
"""

from netaddr import IPNetwork

from datastore.etcd import Etcd
from datastore.retry import attempts
from ipam.blocks import handle_blocks, handle_key, handle_value


def get(etcd: Etcd, handle_id: str) -> dict[str, int] | None:
    """Block CIDR -> address count of a handle; None if it does not exist."""
    kv = etcd.get(handle_key(handle_id))
    return None if kv is None else handle_blocks(kv.value)


def increment(etcd: Etcd, handle_id: str, cidr: IPNetwork, num: int) -> None:
    key, block = handle_key(handle_id), str(cidr)
    for _ in attempts(f"counting up handle {handle_id}"):
        # Most handles are new (one per container), so try the create first.
        if etcd.create(key, handle_value({block: num})) is not None:
            return
        kv = etcd.get(key)
        if kv is None:
            continue
        blocks = handle_blocks(kv.value)
        blocks[block] = blocks.get(block, 0) + num
        if etcd.update(key, handle_value(blocks), kv.mod_revision) is not None:
            return


def decrement(etcd: Etcd, handle_id: str, cidr: IPNetwork, num: int) -> None:
    """Count down; the handle is deleted when it holds no addresses any more."""
    key, block = handle_key(handle_id), str(cidr)
    for _ in attempts(f"counting down handle {handle_id}"):
        kv = etcd.get(key)
        if kv is None:
            return
        blocks = handle_blocks(kv.value)
        left = blocks.get(block, 0) - num
        if left > 0:
            blocks[block] = left
        else:
            blocks.pop(block, None)
        if blocks:
            if etcd.update(key, handle_value(blocks), kv.mod_revision) is not None:
                return
        elif etcd.delete(key, kv.mod_revision):
            return
