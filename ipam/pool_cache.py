"""The IP pools as etcd has them, kept by a watch so that requests read none.

RequestAddress and ReleaseAddress need the pools: which pool a network
uses, which block an address falls in.  Reading them on every request was
one etcd round trip of three.  Until the first snapshot, and whenever the
watch is down, `current()` is None and callers read etcd.  A pool being
disabled or deleted reaches us when the watch delivers it (milliseconds):
`pool delete` waits half a second after disabling a pool before it
releases its blocks, as calicoctl does, for allocations that saw it enabled.
"""

import logging
import threading

from datastore.errors import DatastoreError, WatchStalled
from datastore.etcd import Etcd
from datastore.resources import PLURALS, PREFIX, Resource
from ipam.pools import Pool, parse_pools

LOG = logging.getLogger(__name__)

POOLS_PREFIX = f"{PREFIX}{PLURALS['IPPool']}/"
RETRY_DELAYS = (0.2, 5.0)  # first and longest wait before watching again


class PoolCache:
    def __init__(self, etcd: Etcd, idle_timeout: float = 30.0):
        self.etcd = etcd
        # A quiet watch is normal (pools rarely change); after this long
        # without an event it is replaced, in case the stream died silently.
        self.idle_timeout = idle_timeout
        self._pools: list[Pool] | None = None
        self._stop = threading.Event()
        self._delay = RETRY_DELAYS[0]

    def start(self) -> "PoolCache":
        threading.Thread(target=self._run, daemon=True, name="pool-cache").start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._pools = None

    def current(self) -> list[Pool] | None:
        """Every pool, as list_pools() returns them; None: read etcd instead."""
        return self._pools

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
                continue  # a quiet watch timed out: watch again from a new snapshot
            except DatastoreError as exc:
                self._pools = None
                if self._stop.is_set():  # the client was closed under the watch
                    return
                LOG.warning("IP pools are read from etcd on each request until the pool "
                            "watch is back (%s)", exc)
            except Exception:  # noqa: BLE001 - a bug must not leave the cache stale
                self._pools = None
                LOG.exception("the IP pool watch failed")
            self._stop.wait(self._delay)
            self._delay = min(self._delay * 2, RETRY_DELAYS[1])

    def _follow(self) -> None:
        kvs, revision = self.etcd.get_prefix(POOLS_PREFIX)
        stored = {}
        for kv in kvs:
            _store(stored, kv.key, kv.value, kv.mod_revision)
        self._publish(stored)
        self._delay = RETRY_DELAYS[0]
        try:
            for batch in self.etcd.watch_prefix(POOLS_PREFIX, revision + 1, self.idle_timeout):
                if self._stop.is_set():
                    return
                for event in batch:
                    _store(stored, event.key, event.value, event.mod_revision)
                self._publish(stored)
        except WatchStalled:
            return

    def _publish(self, stored: dict[str, Resource]) -> None:
        if not self._stop.is_set():
            self._pools = parse_pools(stored[key] for key in sorted(stored))


def _store(stored: dict, key: str, value: bytes | None, revision: int) -> None:
    """Record one IPPool key (None: deleted); an unreadable one counts as absent."""
    stored.pop(key, None)
    if value is not None:
        try:
            stored[key] = Resource.from_json(value, revision)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            LOG.warning("ignoring unreadable IP pool %s: %s", key, exc)
