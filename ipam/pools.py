"""Calico IP pools: IPPool resources stored exactly as calicoctl v3 stores them
after defaulting, and their lifecycle (create with overlap checks and the
FelixConfiguration side effect, list and find, delete with calicoctl's
semantics), plus nodeSelector evaluation against a Node's labels.
"""

import copy
import logging
import time
from dataclasses import dataclass, field, replace

from netaddr import AddrFormatError, IPNetwork

from datastore import selector
from datastore.errors import ResourceAlreadyExists, ResourceConflict, ResourceNotFound
from datastore.records import resource_kind
from datastore.resources import Resource, Resources, valid_name
from datastore.retry import attempts
from ipam.blocks import cidr_from_key
from ipam.errors import InvalidPool, PoolInUse, PoolNotFound
from ipam.store import BlockStore

LOG = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}
BLOCK_SIZE_RANGE = {4: (20, 32), 6: (116, 128)}
ENCAP_MODES = ("Always", "CrossSubnet", "Never")
LINK_LOCAL = {4: IPNetwork("169.254.0.0/16"), 6: IPNetwork("fe80::/10")}
# IPPoolSpec fields in Go struct order: the JSON order calicoctl writes.
SPEC_FIELDS = ("cidr", "vxlanMode", "ipipMode", "natOutgoing", "disabled",
               "blockSize", "nodeSelector")


@dataclass(frozen=True)
class Pool:
    name: str
    cidr: IPNetwork
    block_size: int
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    nat_outgoing: bool = False
    disabled: bool = False
    node_selector: str = "all()"
    # The stored object, kept so updates preserve metadata and unknown fields.
    resource: Resource | None = field(default=None, compare=False, repr=False)

    @property
    def version(self) -> int:
        return self.cidr.version

    @property
    def selects_every_node(self) -> bool:
        return self.node_selector.strip() in ("", "all()")

    def selects(self, labels: dict) -> bool:
        return selector.parse(self.node_selector).evaluate(labels)

    def __str__(self):
        return f"{self.name} ({self.cidr}{', disabled' if self.disabled else ''})"

    def spec(self) -> dict:
        spec = {"cidr": str(self.cidr), "vxlanMode": self.vxlan_mode,
                "ipipMode": self.ipip_mode}
        if self.nat_outgoing:  # omitempty in Go
            spec["natOutgoing"] = True
        if self.disabled:
            spec["disabled"] = True
        spec["blockSize"] = self.block_size
        spec["nodeSelector"] = self.node_selector
        return spec

    def to_resource(self) -> Resource:
        if self.resource is None:
            return Resource(kind="IPPool", name=self.name, spec=self.spec())
        res = copy.deepcopy(self.resource)
        # Fields we do not model (e.g. allowedUses from newer Calico) survive.
        extra = {k: v for k, v in res.spec.items() if k not in SPEC_FIELDS}
        res.spec = {**self.spec(), **extra}
        return res

    @classmethod
    def from_resource(cls, res: Resource) -> "Pool":
        """Read a stored pool, applying libcalico-go's read-side defaults."""
        spec = res.spec
        cidr = _parse_cidr(spec.get("cidr", ""))
        return cls(name=res.name, cidr=cidr,
                   block_size=spec.get("blockSize") or DEFAULT_BLOCK_SIZE[cidr.version],
                   ipip_mode=spec.get("ipipMode") or "Never",
                   vxlan_mode=spec.get("vxlanMode") or "Never",
                   nat_outgoing=bool(spec.get("natOutgoing")),
                   disabled=bool(spec.get("disabled")),
                   node_selector=spec.get("nodeSelector") or "all()",
                   resource=res)


# What the follower hands its views (datastore/records.py).
POOLS = resource_kind("IPPool", Pool.from_resource, errors=(InvalidPool,))


def describe(pools) -> str:
    return ", ".join(str(p) for p in pools) or "none"


def _parse_cidr(text) -> IPNetwork:
    try:
        return IPNetwork(text).cidr
    except (AddrFormatError, ValueError, TypeError):
        raise InvalidPool(f"{text!r} is not a valid CIDR (expected e.g. 192.168.0.0/16)") from None


def _overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    return a.version == b.version and a.first <= b.last and b.first <= a.last


# -- building and validating -------------------------------------------------

def build_pool(name: str, cidr: str, *, ipip_mode: str = "Never",
               vxlan_mode: str = "Never", nat_outgoing: bool = False,
               disabled: bool = False, block_size: int | None = None,
               node_selector: str = "all()") -> Pool:
    """A pool with calicoctl's defaults applied (the CIDR masked), validated."""
    network = _parse_cidr(cidr)
    pool = Pool(name=name, cidr=network,
                block_size=block_size or DEFAULT_BLOCK_SIZE[network.version],
                ipip_mode=ipip_mode, vxlan_mode=vxlan_mode,
                nat_outgoing=nat_outgoing, disabled=disabled,
                node_selector=node_selector or "all()")
    validate(pool)
    return pool


def validate(pool: Pool) -> None:
    """Raise InvalidPool naming every rule of libcalico-go's validator that fails."""
    problems = []
    version = pool.version
    if not valid_name(pool.name):
        problems.append(f"name {pool.name!r} is not valid: use lower-case letters, "
                        "digits, '-' and '.', starting and ending with a letter or digit")
    low, high = BLOCK_SIZE_RANGE[version]
    if not low <= pool.block_size <= high:
        problems.append(f"blockSize {pool.block_size} is out of range: IPv{version} "
                        f"pools take {low}-{high}")
    elif pool.cidr.prefixlen > pool.block_size:
        problems.append(f"{pool.cidr} is smaller than one block (/{pool.block_size}); "
                        f"use a larger CIDR or a blockSize of at least {pool.cidr.prefixlen}")
    for label, mode in (("ipipMode", pool.ipip_mode), ("vxlanMode", pool.vxlan_mode)):
        if mode not in ENCAP_MODES:
            problems.append(f"{label} {mode!r} is not one of {', '.join(ENCAP_MODES)}")
        elif version == 6 and label == "ipipMode" and mode != "Never":
            # As Calico: IPIP is IPv4 only; VXLAN carries IPv6 (vxlan-v6.calico).
            problems.append(f"{label} must be Never for an IPv6 pool")
    if pool.ipip_mode != "Never" and pool.vxlan_mode != "Never":
        problems.append("ipipMode and vxlanMode cannot both be enabled; pick one")
    if _overlaps(pool.cidr, LINK_LOCAL[version]):
        problems.append(f"{pool.cidr} overlaps the link-local range {LINK_LOCAL[version]}")
    try:
        selector.parse(pool.node_selector)
    except selector.SelectorError as exc:
        problems.append(f"nodeSelector: {exc}")
    if problems:
        raise InvalidPool(f"invalid IP pool {pool.name}: " + "; ".join(problems))


# -- reading -----------------------------------------------------------------

def list_pools(resources: Resources, version: int | None = None) -> list[Pool]:
    """Every pool, by name (etcd key order), as libcalico-go lists them."""
    return parse_pools(resources.list("IPPool"), version)


def parse_pools(stored, version: int | None = None) -> list[Pool]:
    """The pools of stored IPPool resources; one that does not parse is skipped."""
    pools = []
    for res in stored:
        try:
            pool = Pool.from_resource(res)
        except InvalidPool as exc:
            LOG.warning("ignoring IP pool %s: %s", res.name, exc)
            continue
        if version is None or pool.version == version:
            pools.append(pool)
    return pools


def get_pool(resources: Resources, name: str) -> Pool:
    res = resources.get("IPPool", name) if valid_name(name) else None
    if res is None:
        raise PoolNotFound(f"there is no Calico IP pool named {name!r}; pools: "
                           f"{describe(list_pools(resources))}")
    return Pool.from_resource(res)


def find_pool_by_cidr(resources: Resources, cidr) -> Pool | None:
    """The pool whose CIDR equals cidr (after masking), if any."""
    network = _parse_cidr(cidr)
    return next((p for p in list_pools(resources) if p.cidr == network), None)


def node_labels(resources: Resources, node: str) -> dict:
    """The Node resource's labels; a node without a Node resource has none."""
    res = resources.get("Node", node)
    return dict(res.metadata.get("labels") or {}) if res else {}


# -- create and delete -------------------------------------------------------

def create_pool(resources: Resources, pool: Pool) -> Pool:
    """Store a new pool, refusing a name or CIDR that clashes with another."""
    validate(pool)
    existing = list_pools(resources)
    for other in existing:
        if other.name == pool.name:
            raise InvalidPool(f"an IP pool named {pool.name} already exists: {other}")
        if _overlaps(other.cidr, pool.cidr):
            raise InvalidPool(f"{pool.cidr} overlaps IP pool {other}; pools must not "
                              "overlap, pick another CIDR or delete that pool first")
    _refuse_foreign_blocks(BlockStore(resources.etcd), pool)
    _enable_encapsulation(resources, pool)
    try:
        res = resources.create(pool.to_resource())
    except ResourceAlreadyExists:
        raise InvalidPool(f"an IP pool named {pool.name} already exists") from None
    return Pool.from_resource(res)


def update_pool(resources: Resources, pool: Pool) -> Pool:
    """Store new settings of an existing pool.  cidr and blockSize cannot
    change (as in libcalico-go).  pool.resource, if set, carries the revision
    it was read at: a pool changed since then raises ResourceConflict."""
    validate(pool)
    stored = get_pool(resources, pool.name)
    for name, new, old in (("cidr", pool.cidr, stored.cidr),
                           ("blockSize", pool.block_size, stored.block_size)):
        if new != old:
            raise InvalidPool(f"IP pool {pool.name}: {name} cannot change ({old} -> {new}); "
                              "create a new pool, move the containers, then delete this one")
    if pool.resource is None:
        pool = replace(pool, resource=stored.resource)
    _enable_encapsulation(resources, pool)
    return Pool.from_resource(resources.update(pool.to_resource()))


def _refuse_foreign_blocks(store: BlockStore, pool: Pool) -> None:
    # Blocks left behind by a deleted pool (force delete keeps allocated
    # blocks) must have this pool's block size, or addresses would be found
    # in the wrong block.
    sizes = {cidr_from_key(key).prefixlen
             for key in store.block_revisions(pool.version)
             if cidr_from_key(key) in pool.cidr}
    sizes.discard(pool.block_size)
    if sizes:
        raise InvalidPool(
            f"{pool.cidr} still holds allocation blocks of size "
            f"/{', /'.join(map(str, sorted(sizes)))} from an earlier pool; create it "
            f"with that blockSize, or release those addresses first")


def _enable_encapsulation(resources: Resources, pool: Pool) -> None:
    # As libcalico-go: turn IPIP/VXLAN on in Felix before the pool is
    # written, so that a failure here can simply be retried.
    if pool.ipip_mode != "Never":
        _enable_in_felix(resources, "ipipEnabled")
    if pool.vxlan_mode != "Never":
        _enable_in_felix(resources, "vxlanEnabled")


def _enable_in_felix(resources: Resources, field_name: str) -> None:
    def enable(config: Resource) -> Resource | None:
        if config.spec.get(field_name) is True:
            return None
        config.spec[field_name] = True
        return config

    resources.modify("FelixConfiguration", "default", enable, create=lambda: Resource(
        kind="FelixConfiguration", name="default", spec={field_name: True}))


def delete_pool(resources: Resources, name: str, force: bool = False,
                grace: float = 0.5) -> Pool:
    """Delete a pool as calicoctl does: disable it, release its blocks'
    affinities (deleting empty blocks), then delete it.

    Refused while addresses are allocated in the pool, unless force: then
    the allocated blocks lose their affinity but keep their addresses.
    grace: how long to let allocations that read the pool before it was
    disabled finish (libcalico-go waits 500 ms).
    """
    pool = get_pool(resources, name)
    store = BlockStore(resources.etcd)
    in_use = sum(block.in_use for _, block, _ in store.blocks(pool.version)
                 if block.cidr in pool.cidr)
    if in_use and not force:
        raise PoolInUse(
            f"IP pool {pool} still has {in_use} allocated address(es); remove the "
            "containers using it first, or force the delete (the addresses then "
            "stay allocated outside any pool)")
    if not pool.disabled:
        pool = _disable(resources, pool)
        time.sleep(grace)
    kept = store.release_affinities(within=pool.cidr, require_empty=not force)
    if kept:
        raise PoolInUse(
            f"addresses were allocated in IP pool {pool.name} while it was being "
            f"deleted (blocks {', '.join(map(str, kept))}); it is left disabled: "
            "remove those containers and delete it again")
    for _ in attempts(f"deleting IP pool {name}"):
        if resources.delete("IPPool", name, pool.resource.revision):
            return pool
        try:
            pool = get_pool(resources, name)
        except PoolNotFound:
            return pool


def _disable(resources: Resources, pool: Pool) -> Pool:
    for _ in attempts(f"disabling IP pool {pool.name}"):
        try:
            return Pool.from_resource(
                resources.update(replace(pool, disabled=True).to_resource()))
        except (ResourceConflict, ResourceNotFound):
            pool = get_pool(resources, pool.name)
