"""What the agent knows of the cluster: nodes, pools, block affinities and
the borrowed addresses in blocks, kept from an etcd snapshot plus watch
events.  Pure: parsing and bookkeeping only, nothing here talks to etcd.

A key is applied with its full new value (or None when deleted), so events
replayed from an older revision still end in the right state.
"""

import json
import logging
from dataclasses import dataclass

from netaddr import AddrFormatError, IPAddress, IPNetwork

from datastore.resources import PREFIX, Resource
from ipam.blocks import (CONFIRMED, HOST_PREFIX, IPAM_PREFIX, affinity_state, cidr_from_key,
                         parse_affinity_key)
from ipam.errors import InvalidPool
from ipam.pools import Pool

LOG = logging.getLogger(__name__)

NODE_PREFIX = PREFIX + "nodes/"
POOL_PREFIX = PREFIX + "ippools/"
BLOCK_PREFIX = IPAM_PREFIX + "assignment/"
# Everything above lives under /calico/, and so do the agents' liveness
# keys, whose regular writes keep a healthy watch from ever going quiet.
WATCH_PREFIX = "/calico/"
SNAPSHOT_PREFIXES = (HOST_PREFIX, BLOCK_PREFIX, NODE_PREFIX, POOL_PREFIX)


@dataclass(frozen=True)
class Node:
    name: str
    address: IPNetwork | None  # bgp.ipv4Address: the IP with its subnet's prefix
    vtep_ip: IPAddress | None = None
    vtep_mac: str | None = None
    address6: IPNetwork | None = None  # bgp.ipv6Address
    vtep6_ip: IPAddress | None = None  # ipv6VXLANTunnelAddr
    vtep6_mac: str | None = None  # vxlanTunnelMACAddrV6

    @classmethod
    def from_resource(cls, res: Resource) -> "Node":
        spec = res.spec
        bgp = spec.get("bgp") or {}
        return cls(res.name, _network(bgp.get("ipv4Address"), 4),
                   _address(spec.get("ipv4VXLANTunnelAddr")),
                   (spec.get("vxlanTunnelMACAddr") or "").lower() or None,
                   _network(bgp.get("ipv6Address"), 6),
                   _address(spec.get("ipv6VXLANTunnelAddr")),
                   (spec.get("vxlanTunnelMACAddrV6") or "").lower() or None)

    def address_of(self, version: int) -> IPNetwork | None:
        return self.address if version == 4 else self.address6

    def vtep_of(self, version: int) -> tuple[IPAddress | None, str | None]:
        return (self.vtep_ip, self.vtep_mac) if version == 4 else (self.vtep6_ip, self.vtep6_mac)


@dataclass(frozen=True)
class Block:
    cidr: IPNetwork
    host: str | None
    # Addresses allocated to a node other than the block's host (the
    # allocation attribute's secondary.node): each needs a /32 of its own.
    borrowed: tuple[tuple[IPAddress, str], ...] = ()

    @classmethod
    def from_json(cls, raw: bytes) -> "Block":
        value = json.loads(raw)
        cidr = IPNetwork(value["cidr"])
        affinity = value.get("affinity") or ""
        host = affinity[len("host:"):] if affinity.startswith("host:") else None
        owners = [(a.get("secondary") or {}).get("node") for a in value.get("attributes") or []]
        borrowed = []
        for ordinal, index in enumerate(value.get("allocations") or []):
            if index is not None and index < len(owners) and owners[index] not in (None, host):
                borrowed.append((IPAddress(cidr.first + ordinal, cidr.version), owners[index]))
        return cls(cidr, host, tuple(borrowed))


class ClusterState:
    def __init__(self):
        self.nodes: dict[str, Node] = {}
        self.pools: dict[str, Pool] = {}
        self.affinities: dict[tuple[str, IPNetwork], str] = {}  # (node, block) -> state
        self.blocks: dict[IPNetwork, Block] = {}

    def on_change(self, key: str, value: bytes | None) -> bool:
        """Record one key's new value (None: deleted); False if the key is
        not one the agent routes by."""
        try:
            return self._on_change(key, value)
        except (ValueError, KeyError, TypeError, AddrFormatError, InvalidPool) as exc:
            LOG.warning("ignoring unreadable %s: %s", key, exc)
            return False

    def _on_change(self, key, value) -> bool:
        if key.startswith(HOST_PREFIX):
            parsed = parse_affinity_key(key)
            if parsed is None:
                return False
            _set(self.affinities, parsed, None if value is None else affinity_state(value))
        elif key.startswith(BLOCK_PREFIX):
            _set(self.blocks, cidr_from_key(key), None if value is None else Block.from_json(value))
        elif key.startswith(NODE_PREFIX):
            name = key[len(NODE_PREFIX):]
            _set(self.nodes, name, None if value is None else
                 Node.from_resource(Resource.from_json(value)))
        elif key.startswith(POOL_PREFIX):
            name = key[len(POOL_PREFIX):]
            _set(self.pools, name, None if value is None else
                 Pool.from_resource(Resource.from_json(value)))
        else:
            return False
        return True

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


def _set(table: dict, key, value) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def _network(text, version: int) -> IPNetwork | None:
    try:
        net = IPNetwork(text) if text else None
    except (AddrFormatError, ValueError):
        return None
    return net if net is not None and net.version == version else None


def _address(text) -> IPAddress | None:
    try:
        return IPAddress(text.split("/")[0]) if text else None
    except (AddrFormatError, ValueError):
        return None
