"""Addresses this plugin allocated that nothing uses: `ipam gc` and `check`
find them from the blocks and the addresses in use they read.

Only handles this plugin makes ("libnetwork.<hex>", attrs type "libnetwork")
are candidates, and a handle only when every address it holds is unused and
older than the grace period: tunnel addresses, CNI's and other components'
allocations are never touched.
"""

import datetime
from typing import NamedTuple

from netaddr import IPAddress

from ipam.driver import ALLOCATION_TYPE, HANDLE_ID_PREFIX


class Leak(NamedTuple):
    address: str
    handle: str
    node: str | None
    endpoint_name: str | None
    age: int  # seconds since the address was allocated


def leaked(blocks, used: set[IPAddress], grace: float) -> list[Leak]:
    """The addresses of `blocks` ((key, block, revision) as BlockStore.blocks
    lists them) this plugin allocated, older than grace, whose handle holds
    none of `used`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    by_handle = {}
    for _, block, _ in blocks:
        for ordinal, index in enumerate(block.allocations):
            if index is not None:
                ip = block.ip(ordinal)
                handle, attrs = block.allocation(ip)
                if handle and handle.startswith(HANDLE_ID_PREFIX):
                    by_handle.setdefault(handle, []).append((ip, attrs))
    found = []
    for handle, allocations in by_handle.items():
        leaked = [_leak(ip, handle, attrs, used, grace, now) for ip, attrs in allocations]
        if all(leaked):  # release_by_handle frees all of a handle's addresses
            found += leaked
    return sorted(found, key=lambda leak: IPAddress(leak.address).sort_key())


def _leak(ip, handle, attrs, used, grace, now) -> Leak | None:
    age = _age(attrs.get("timestamp"), now)
    if attrs.get("type") != ALLOCATION_TYPE or ip in used or age is None or age < grace:
        return None
    return Leak(str(ip), handle, attrs.get("node"), attrs.get("endpoint-name"), int(age))


def _age(timestamp, now) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(str(timestamp))
    except ValueError:
        return None  # unknown age: never old enough
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return (now - when).total_seconds()
