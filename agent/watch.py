"""Keeping a ClusterState in step with etcd: a snapshot of the prefixes the
agent routes by, then one watch on /calico/ from the snapshot's revision.
Any failure (etcd down, the stream broken or silent, the revision
compacted) means: wait a little, take a new snapshot, watch again."""

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from agent.routing.model import SNAPSHOT_PREFIXES, WATCH_PREFIX, ClusterState
from datastore.errors import DatastoreError
from datastore.etcd import Etcd

LOG = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 5.0)  # first and longest wait before re-snapshotting

# on_batch(state, changed, snapshot): called after the snapshot (snapshot
# True) and after every watch batch (changed: a routing key was in it).
OnBatch = Callable[[ClusterState, bool, bool], None]


class View(Protocol):
    """Another consumer of the same snapshot and watch (the policy engine,
    the name index); each view is given every key."""

    prefixes: tuple[str, ...]  # what its snapshot reads

    def reset(self) -> None: ...  # a new snapshot follows

    # False: nothing it holds changed (not its key, or a record equal to
    # the one it holds as it sees it), so batch_done need not work for it.
    def on_change(self, key: str, value: bytes | None) -> bool: ...

    def batch_done(self, changed: bool, snapshot: bool) -> None: ...


def load_state(etcd: Etcd, views=()) -> tuple[ClusterState, int]:
    """The state now, and a revision from which a watch misses nothing.

    Each prefix is read at its own revision; watching from the oldest of
    them replays some events the snapshot already holds, which is harmless
    because every event carries its key's whole value.
    """
    state, revisions = ClusterState(), []
    for prefix in SNAPSHOT_PREFIXES:
        kvs, revision = etcd.get_prefix(prefix)
        revisions.append(revision)
        for kv in kvs:
            state.on_change(kv.key, kv.value)
    for view in views:
        view.reset()
    # Several views may read one prefix (every workload endpoint, for policy
    # and for names): read it once.
    for prefix in dict.fromkeys(p for view in views for p in view.prefixes):
        kvs, revision = etcd.get_prefix(prefix)
        revisions.append(revision)
        readers = [view for view in views if prefix in view.prefixes]
        for kv in kvs:
            for view in readers:
                view.on_change(kv.key, kv.value)
    return state, min(revisions)


class Syncer:
    def __init__(self, etcd: Etcd, on_batch: OnBatch, idle_timeout: float,
                 stop: threading.Event, views: tuple[View, ...] = ()):
        self.etcd, self.on_batch, self.views = etcd, on_batch, views
        self.idle_timeout, self.stop = idle_timeout, stop
        self._delay = RETRY_DELAYS[0]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._sync_once()
            except DatastoreError as exc:
                LOG.warning("lost the etcd watch (%s); new snapshot in %.1f s",
                            exc, self._delay)
            except Exception:  # noqa: BLE001 - a bug must not silently stop routing
                LOG.exception("node agent sync failed; new snapshot in %.1f s", self._delay)
            self.stop.wait(self._delay)
            self._delay = min(self._delay * 2, RETRY_DELAYS[1])

    def _sync_once(self) -> None:
        state, revision = load_state(self.etcd, self.views)
        self._delay = RETRY_DELAYS[0]
        LOG.info("snapshot at revision %d: %d nodes, %d pools, %d affinities, %d blocks",
                 revision, len(state.nodes), len(state.pools), len(state.affinities),
                 len(state.blocks))
        self.on_batch(state, True, True)
        self._views_done(True, True)
        for batch in self.etcd.watch_prefix(WATCH_PREFIX, revision + 1, self.idle_timeout):
            if self.stop.is_set():
                return
            routing, seen = False, {view: False for view in self.views}
            for event in batch:
                if state.on_change(event.key, event.value):
                    routing = True
                    continue
                for view in self.views:  # several views may read one key
                    if view.on_change(event.key, event.value):
                        seen[view] = True
            self.on_batch(state, routing, False)
            for view, changed in seen.items():
                view.batch_done(changed, False)

    def _views_done(self, changed: bool, snapshot: bool) -> None:
        for view in self.views:
            view.batch_done(changed, snapshot)
