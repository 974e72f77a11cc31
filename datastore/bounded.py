"""A bounded dict shared by threads, for a process's hints about what it
wrote or read in etcd (the IPAM handles it created, the driver's
WorkloadEndpoints and networks as last written).

Every write to etcd still compares revisions, so an entry pushed out costs
a read, never a wrong write.  Here, beside the etcd client, because ipam/
and driver/ both keep such hints and may import only datastore/.
"""

import threading
from collections.abc import Callable
from typing import Any


class BoundedDict:
    """At most `limit` entries; adding one more pushes out the oldest.
    Each method holds the lock for all it does (a lookup and an eviction
    racing on the same key once failed with KeyError)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._entries: dict = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key, default=None):
        with self._lock:
            return self._entries.get(key, default)

    def put(self, key, value) -> None:
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.limit:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = value

    def pop(self, key, default=None):
        with self._lock:
            return self._entries.pop(key, default)

    def replace(self, key, change: Callable[[Any], Any]) -> None:
        """Store change(entry) in place of the entry, when there is one (an
        entry popped meanwhile stays gone)."""
        with self._lock:
            if key in self._entries:
                self._entries[key] = change(self._entries[key])
