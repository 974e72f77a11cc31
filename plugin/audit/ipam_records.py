"""IPAM against itself and the Nodes: a handle whose count disagrees with
the blocks (the blocks are the truth, calico-datastore.md §4.10), and a
block, or a block affinity, of a node that no longer exists (its addresses
stay allocated; only the claim on the block goes)."""

from netaddr import IPNetwork

from ipam.blocks import block_key, handle_key, handle_value
from plugin.audit.findings import Finding, RepairRefused, fixable
from plugin.audit.layers import ETCD, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD,)


def check(layers: Layers, tools: Tools, _grace) -> list[Finding]:
    return _handles(layers, tools) + _orphans(layers, tools)


def _handles(layers: Layers, tools: Tools) -> list[Finding]:
    counted: dict[str, dict[str, int]] = {}  # handle -> block CIDR -> addresses
    blocks = {}  # block CIDR -> (block, revision)
    for _, block, revision in layers.blocks:
        blocks[str(block.cidr)] = (block, revision)
        for ordinal, index in enumerate(block.allocations):
            if index is not None:
                handle, _ = block.allocation(block.ip(ordinal))
                if handle:
                    per_block = counted.setdefault(handle, {})
                    per_block[str(block.cidr)] = per_block.get(str(block.cidr), 0) + 1
    found = []
    for handle in sorted(set(counted) | set(layers.handles)):
        truth = counted.get(handle, {})
        stored = layers.handles.get(handle)
        recorded = {str(IPNetwork(c)): n for c, n in (stored.counts if stored else {}).items()
                    if n}
        if recorded == truth:
            continue
        involved = sorted(c for c in set(truth) | set(recorded) if c in blocks)
        found.append(fixable(
            "handle-count",
            f"handle {handle} counts {_counts(recorded)} but its blocks hold {_counts(truth)}",
            "deletes it" if not truth else "rewrites its counts from the blocks",
            lambda h=handle, t=truth, s=stored, b=involved:
                _fix_handle(tools, h, t, s, {c: blocks[c] for c in b}, blocks)))
    return found


def _counts(per_block: dict) -> str:
    total = sum(per_block.values())
    return f"{total} address{'' if total == 1 else 'es'}" + \
        (f" ({', '.join(f'{n} in {c}' for c, n in sorted(per_block.items()))})" if total else "")


def _fix_handle(tools: Tools, handle: str, truth: dict, stored, involved: dict,
                blocks: dict) -> None:
    """One transaction: the handle as the blocks count it, on the condition
    that neither the handle nor those blocks changed since they were read
    (the blocks are written back unchanged, to compare their revisions;
    `blocks` then learns their new revision, for the next handle's fix)."""
    unchanged = [(block_key(b.cidr), b.to_json(), rev) for b, rev in involved.values()]
    key = handle_key(handle)
    if not truth:
        done = tools.resources.etcd.commit(deletes=[(key, stored.revision)], updates=unchanged)
    elif stored is None:
        done = tools.resources.etcd.commit(creates=[(key, handle_value(truth))],
                                           updates=unchanged)
    else:
        done = tools.resources.etcd.commit(
            updates=[(key, handle_value(truth), stored.revision)] + unchanged)
    if not done:
        raise RepairRefused("the handle or its blocks changed meanwhile; run check again")
    for cidr, (block, _) in involved.items():
        blocks[cidr] = (block, done.revision)


def _orphans(layers: Layers, tools: Tools) -> list[Finding]:
    found = []
    claimed = set()
    for aff in layers.affinities:
        claimed.add((aff.node, str(aff.cidr)))
        if aff.node not in layers.nodes:
            found.append(fixable(
                "affinity-orphan",
                f"block {aff.cidr} is affine to node {aff.node}, which no longer exists",
                "releases the affinity (addresses still allocated in it stay)",
                lambda a=aff: _release_affinity(tools, a.node, a.cidr)))
    for _, block, revision in layers.blocks:
        host = block.host
        if host and host not in layers.nodes and (host, str(block.cidr)) not in claimed:
            found.append(fixable(
                "block-orphan",
                f"block {block.cidr} is affine to node {host}, which no longer exists",
                "deletes it" if block.empty else
                "makes it affine to no node (its allocated addresses stay)",
                lambda b=block, r=revision: _unclaim(tools, b, r)))
    return found


def _node_gone(tools: Tools, node: str) -> None:
    if tools.resources.get("Node", node) is not None:
        raise RepairRefused(f"node {node} exists again; left alone")


def _release_affinity(tools: Tools, node: str, cidr) -> None:
    _node_gone(tools, node)
    tools.ipam.store.release_affinity(node, cidr, require_empty=False)


def _unclaim(tools: Tools, block, revision: int) -> None:
    _node_gone(tools, block.host)
    store = tools.ipam.store
    if block.empty:
        store.delete_block(block, revision)
    else:
        block.affinity = None
        store.update_block(block, revision)
