"""Calico IPAM records under /calico/ipam/v2/: the allocation block model and
the keys and values of blocks, block affinities, handles and the IPAM config,
byte-compatible with libcalico-go.  Pure: nothing here talks to etcd.
"""

import functools
import json
import re
from typing import NamedTuple

from netaddr import IPAddress, IPNetwork

from datastore.records import Kind

IPAM_PREFIX = "/calico/ipam/v2/"
HOST_PREFIX = IPAM_PREFIX + "host/"
BLOCKS_PREFIX = IPAM_PREFIX + "assignment/"
HANDLES_KEY_PREFIX = IPAM_PREFIX + "handle/"
CONFIG_KEY = IPAM_PREFIX + "config"

# Block affinity states (model.StatePending/StateConfirmed/StatePendingDeletion).
PENDING = "pending"
CONFIRMED = "confirmed"
PENDING_DELETION = "pendingDeletion"

_AFFINITY_KEY_RE = re.compile(r"^/calico/ipam/v2/host/([^/]+)/ipv[46]/block/([^/]+)$")


# -- keys --------------------------------------------------------------------

def _cidr_part(cidr: IPNetwork) -> str:
    return f"{cidr.network}-{cidr.prefixlen}"


@functools.lru_cache(maxsize=65536)
def _parse_cidr_part(part: str) -> IPNetwork:
    # Cached: the slow allocation path parses every block key of a listing.
    # Callers must not mutate the shared result.
    return IPNetwork(part.replace("-", "/", 1))


def cidr_from_key(key: str) -> IPNetwork:
    """The block CIDR at the end of a block or affinity key (first '-' is '/')."""
    return _parse_cidr_part(key.rsplit("/", 1)[1])


def block_prefix(version: int) -> str:
    return f"{BLOCKS_PREFIX}ipv{version}/block/"


def block_key(cidr: IPNetwork) -> str:
    return block_prefix(cidr.version) + _cidr_part(cidr)


def affinity_prefix(node: str | None = None, version: int | None = None) -> str:
    if node is None:
        return HOST_PREFIX
    if version is None:
        return f"{HOST_PREFIX}{node}/"
    return f"{HOST_PREFIX}{node}/ipv{version}/block/"


def affinity_key(node: str, cidr: IPNetwork) -> str:
    return affinity_prefix(node, cidr.version) + _cidr_part(cidr)


def parse_affinity_key(key: str) -> tuple[str, IPNetwork] | None:
    """(node, block CIDR) of an affinity key; None for other keys under host/."""
    match = _AFFINITY_KEY_RE.match(key)
    if not match:
        return None
    return match.group(1), _parse_cidr_part(match.group(2))


def handle_key(handle_id: str) -> str:
    return HANDLES_KEY_PREFIX + handle_id


# -- values ------------------------------------------------------------------

def affinity_value(state: str) -> dict:
    return {"state": state, "deleted": False}


def affinity_state(raw: bytes) -> str:
    """The state of a stored affinity.  Data written before Calico 3.0.7 holds
    "" (no state), which libcalico-go treats as implicitly confirmed."""
    value = json.loads(raw) if raw.strip() else {}
    state = value.get("state") if isinstance(value, dict) else None
    return state or CONFIRMED


def handle_value(blocks: dict[str, int]) -> dict:
    """A handle record: how many addresses carry the handle, per block CIDR."""
    return {"block": blocks, "deleted": False}


def handle_blocks(raw: bytes) -> dict[str, int]:
    return dict(json.loads(raw).get("block") or {})


class BlockAffinity(NamedTuple):
    node: str
    cidr: IPNetwork
    state: str

    @classmethod
    def from_kv(cls, key: str, raw: bytes, _revision=None) -> "BlockAffinity | None":
        """The affinity an affinity key holds; None for other keys under host/."""
        parsed = parse_affinity_key(key)
        return None if parsed is None else cls(*parsed, affinity_state(raw))


class IpamConfig(NamedTuple):
    strict_affinity: bool = False
    auto_allocate_blocks: bool = True

    @classmethod
    def from_json(cls, raw: bytes | None) -> "IpamConfig":
        if raw is None:  # no config key: libcalico-go's GetIPAMConfig defaults
            return cls()
        value = json.loads(raw)
        # Every field is omitempty, so in a stored config a missing field is false.
        return cls(bool(value.get("strict_affinity")),
                   bool(value.get("auto_allocate_blocks")))


# -- the allocation block ----------------------------------------------------

class AffinityMismatch(Exception):
    """The block is not affine to the host and the caller asked for a check."""


class OrdinalInUse(Exception):
    """The requested address is already allocated in the block."""


class Release(NamedTuple):
    freed: int
    not_allocated: list  # the requested addresses that were already free
    by_handle: dict      # handle id -> addresses freed with that handle


class AllocationBlock:
    """One block of addresses (model.AllocationBlock), mutated in memory and
    written back with a compare-and-swap by the caller.

    allocations[ordinal] is None (free) or an index into attributes; unallocated
    lists the free ordinals in the order they will be handed out.
    """

    def __init__(self, cidr: IPNetwork, affinity: str | None, allocations: list,
                 unallocated: list, attributes: list, strict_affinity: bool = False):
        self.cidr = cidr
        self.affinity = affinity
        self.allocations = allocations
        self.unallocated = unallocated
        self.attributes = attributes
        self.strict_affinity = strict_affinity

    @classmethod
    def new(cls, cidr: IPNetwork, affinity: str | None = None) -> "AllocationBlock":
        size = cidr.size
        return cls(cidr, affinity, [None] * size, list(range(size)), [])

    @classmethod
    def from_json(cls, raw: bytes | str) -> "AllocationBlock":
        value = json.loads(raw)
        affinity = value.get("affinity")
        if affinity is None and value.get("hostAffinity"):  # pre-v3 form
            affinity = "host:" + value["hostAffinity"]
        attributes = [{"handle_id": a.get("handle_id"), "secondary": a.get("secondary")}
                      for a in value.get("attributes") or []]
        return cls(IPNetwork(value["cidr"]), affinity, value.get("allocations") or [],
                   value.get("unallocated") or [], attributes,
                   bool(value.get("strictAffinity")))

    def to_json(self) -> str:
        # Field order of model.AllocationBlock, as libcalico-go writes it.
        return json.dumps({
            "cidr": str(self.cidr),
            "affinity": self.affinity,
            "strictAffinity": self.strict_affinity,
            "allocations": self.allocations,
            "unallocated": self.unallocated,
            "attributes": self.attributes,
            "deleted": False,
        }, separators=(",", ":"))

    # -- views ----------------------------------------------------------

    @property
    def size(self) -> int:
        return self.cidr.size

    @property
    def free(self) -> int:
        return len(self.unallocated)

    @property
    def in_use(self) -> int:
        return self.size - self.free

    @property
    def empty(self) -> bool:
        return self.free == self.size

    @property
    def host(self) -> str | None:
        """The node the block is affine to, if any."""
        if self.affinity and self.affinity.startswith("host:"):
            return self.affinity[len("host:"):]
        return None

    def is_affine_to(self, node: str) -> bool:
        return self.affinity == "host:" + node

    def ip(self, ordinal: int) -> IPAddress:
        return IPAddress(self.cidr.first + ordinal, self.cidr.version)

    def ordinal(self, ip: IPAddress) -> int:
        ordinal = int(ip) - self.cidr.first
        if ip.version != self.cidr.version or not 0 <= ordinal < self.size:
            raise ValueError(f"{ip} is not in block {self.cidr}")
        return ordinal

    def allocation(self, ip: IPAddress) -> tuple[str | None, dict] | None:
        """(handle id, attributes) of an allocated address, None if it is free."""
        index = self.allocations[self.ordinal(ip)]
        if index is None:
            return None
        attribute = self.attributes[index]
        return attribute["handle_id"], dict(attribute["secondary"] or {})

    # -- changes --------------------------------------------------------

    def auto_assign(self, num: int, handle_id: str | None, attrs: dict | None,
                    node: str, affinity_check: bool) -> list[IPAddress]:
        """Allocate up to num addresses from the front of the free list."""
        self._check_affinity(node, affinity_check)
        ordinals = self.unallocated[:num]
        if not ordinals:
            return []
        del self.unallocated[:len(ordinals)]
        index = self._attribute_index(handle_id, attrs)
        for ordinal in ordinals:
            self.allocations[ordinal] = index
        return [self.ip(o) for o in ordinals]

    def assign(self, ip: IPAddress, handle_id: str | None, attrs: dict | None,
               node: str, affinity_check: bool) -> None:
        """Allocate exactly ip."""
        self._check_affinity(node, affinity_check)
        ordinal = self.ordinal(ip)
        if self.allocations[ordinal] is not None:
            raise OrdinalInUse(f"{ip} is already assigned in block {self.cidr}")
        self.unallocated.remove(ordinal)
        self.allocations[ordinal] = self._attribute_index(handle_id, attrs)

    def release(self, ips) -> Release:
        """Free the given addresses; freed ordinals go to the back of the free
        list so a released address is reused last."""
        freed, not_allocated, by_handle = [], [], {}
        for ip in dict.fromkeys(ips):
            ordinal = self.ordinal(ip)
            index = self.allocations[ordinal]
            if index is None:
                not_allocated.append(ip)
                continue
            handle = self.attributes[index]["handle_id"]
            if handle is not None:
                by_handle[handle] = by_handle.get(handle, 0) + 1
            freed.append(ordinal)
        self._free(freed)
        return Release(len(freed), not_allocated, by_handle)

    def release_by_handle(self, handle_id: str) -> int:
        """Free every address carrying handle_id; how many were freed."""
        indexes = {i for i, a in enumerate(self.attributes) if a["handle_id"] == handle_id}
        ordinals = [o for o, index in enumerate(self.allocations) if index in indexes]
        self._free(ordinals)
        return len(ordinals)

    def _check_affinity(self, node: str, affinity_check: bool) -> None:
        # A block stored with strictAffinity (Calico <= 3.12) enforces it itself.
        if (affinity_check or self.strict_affinity) and not self.is_affine_to(node):
            raise AffinityMismatch(
                f"block {self.cidr} is affine to {self.affinity or 'no host'}, not {node}")

    def _attribute_index(self, handle_id, attrs) -> int:
        # Allocations with identical (handle, attributes) share one entry.
        attribute = {"handle_id": handle_id,
                     "secondary": dict(sorted(attrs.items())) if attrs else None}
        try:
            return self.attributes.index(attribute)
        except ValueError:
            self.attributes.append(attribute)
            return len(self.attributes) - 1

    def _free(self, ordinals: list[int]) -> None:
        if not ordinals:
            return
        for ordinal in ordinals:
            self.allocations[ordinal] = None
        self.unallocated.extend(ordinals)
        # Drop attributes nothing points at any more and renumber the rest,
        # keeping their order (libcalico-go's deleteAttributes).
        used = sorted({i for i in self.allocations if i is not None})
        if len(used) == len(self.attributes):
            return
        renumber = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[i] for i in used]
        self.allocations = [None if i is None else renumber[i] for i in self.allocations]


# What the follower hands its views (datastore/records.py).  A block record
# is shared by every view: views read it, never change it.
BLOCKS = Kind("AllocationBlock", BLOCKS_PREFIX,
              lambda _key, value, _revision: AllocationBlock.from_json(value))
AFFINITIES = Kind("BlockAffinity", HOST_PREFIX, BlockAffinity.from_kv)
