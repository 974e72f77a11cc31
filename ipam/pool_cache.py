"""The IP pools as etcd has them, kept by a follower so that requests read none.

RequestAddress and ReleaseAddress need the pools: which pool a network
uses, which block an address falls in.  Reading them on every request was
one etcd round trip of three.  Until the first snapshot, and whenever the
watch is down, `current()` is None and callers read etcd.  A pool being
disabled or deleted reaches us when the watch delivers it (milliseconds):
`pool delete` waits half a second after disabling a pool before it
releases its blocks, as calicoctl does, for allocations that saw it enabled.
"""

import threading

from datastore.etcd import Etcd
from datastore.follower import Follower
from ipam.pools import POOLS, Pool


class PoolCache:
    """A view of a follower of its own, in the plugin's worker: it
    subscribes to the IPPools alone."""

    kinds = (POOLS,)

    def __init__(self, etcd: Etcd, idle_timeout: float = 30.0):
        self._stop = threading.Event()
        # A quiet watch is normal (pools rarely change); after idle_timeout
        # without an event it is replaced, in case the stream died silently.
        # A lost watch is not resumed: pools are few, and none that may have
        # changed while nothing watched is ever served.
        self._follower = Follower(etcd, (self,), idle_timeout, self._stop, resume=False)
        self._pools: list[Pool] | None = None
        self._held: dict[str, Pool] = {}

    def start(self) -> "PoolCache":
        self._follower.start("pool-cache")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._pools = None

    def current(self) -> list[Pool] | None:
        """Every pool, as list_pools() returns them; None: read etcd instead."""
        return self._pools

    # -- the follower's view ------------------------------------------------

    def reset(self) -> None:
        self._pools, self._held = None, {}

    def on_change(self, kind, key: str, pool: Pool | None) -> bool:
        # Kept even when equal: the new one carries the revision it was read at.
        old = self._held.pop(key, None)
        if pool is not None:
            self._held[key] = pool
        return old is not None or pool is not None

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if (changed or snapshot) and not self._stop.is_set():
            self._pools = [self._held[key] for key in sorted(self._held)]
