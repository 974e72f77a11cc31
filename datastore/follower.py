"""The one loop that follows etcd: a snapshot of what its views subscribe
to, then one watch from the snapshot's revision, each key parsed once
(records.py) and handed to every view of its kind.

Models: networking-calico's EtcdWatcher + PathDispatcher, Felix's fetcd.py
feeding splitter.py.  A watch that fails (a member down, the stream broken,
no quorum) or goes quiet (nothing for idle_timeout: the client's stream can
hang silently when etcd dies) resumes from the last revision it saw, on
another member if need be, after a backoff (at once for a quiet one): the
views keep what they hold, and miss nothing.  Only when etcd no longer has
that revision (compacted, or a new store whose revision is behind it) are
the views reset and handed a new snapshot.  A follower made with
resume=False resets its views as soon as the watch fails, and takes a new
snapshot instead of resuming: for views that must never serve what may
have changed while nothing watched (the plugin's pool cache).

A follower made with a Throttle hands its views at most a burst of batches
at once, then one per interval, as Felix applies its dataplane: under a
steady stream of changes everywhere in the cluster, the views work once
per interval on all that arrived meanwhile, not once per change.
"""

import logging
import os
import threading
import time
from typing import Protocol

from datastore.errors import DatastoreError, RevisionCompacted, WatchStalled
from datastore.etcd import Etcd
from datastore.records import Kind, parse
from datastore.retry import Backoff

LOG = logging.getLogger(__name__)

RETRY_DELAYS = (0.2, 5.0)  # first and longest wait before re-snapshotting


class View(Protocol):
    """A consumer of the follower's records: the agent's routes, policy and
    names, the plugin worker's pool cache."""

    kinds: tuple[Kind, ...]  # what it subscribes to

    # Forget what it holds: a snapshot follows.
    def reset(self) -> None: ...

    # One key's record (None: deleted, unreadable or not one of its kind's
    # records).  False: nothing it holds changed as it sees it, so
    # batch_done need not work for it.
    def on_change(self, kind: Kind, key: str, record) -> bool: ...

    # After the snapshot (snapshot True) and after every watch batch.
    def batch_done(self, changed: bool, snapshot: bool) -> None: ...


def snapshot(etcd: Etcd, views) -> int:
    """Reset the views and hand them every record of their kinds; returns a
    revision from which a watch misses nothing.

    Each kind's prefix is read once, whatever number of views subscribe to
    it, at its own revision: watching from the oldest replays some events
    the snapshot holds, which is harmless because every event carries its
    key's whole value."""
    for view in views:
        view.reset()
    revisions = []
    for kind, readers in _readers(views).items():
        # A page at a time: the raw values of one page are held, not all.
        for kvs, revision in etcd.prefix_pages(kind.prefix):
            for kv in kvs:
                record = parse(kind, kv.key, kv.value, kv.mod_revision)
                for view in readers:
                    view.on_change(kind, kv.key, record)
        revisions.append(revision)
    return min(revisions)


def _readers(views) -> dict[Kind, list]:
    """Each kind subscribed to -> its views, in the views' order."""
    readers = {}
    for view in views:
        for kind in view.kinds:
            readers.setdefault(kind, []).append(view)
    return readers


def watch_prefix(kinds) -> str:
    """The narrowest prefix holding every kind's keys, cut at a '/'.  The
    agent's kinds give /calico/, where the liveness keys' regular writes
    keep a healthy watch from going quiet; the pool cache's, the IPPools
    alone, where quiet is normal."""
    common = os.path.commonprefix([kind.prefix for kind in kinds])
    return common[:common.rfind("/") + 1]


class Throttle:
    """Felix's apply throttle (int_dataplane.go: throttle.New(10), one more
    admitted every 100 ms): `burst` admissions at once, then one per
    `interval`."""

    def __init__(self, burst: int = 10, interval: float = 0.1):
        self.burst, self.interval = burst, interval
        self._tokens, self._at = float(burst), time.monotonic()

    def delay(self) -> float:
        """Take one admission for what was just handed over; the wait until
        the next one is due (0: now)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) / self.interval) - 1
        self._at = now
        return max(0.0, (1 - self._tokens) * self.interval)


class Follower:
    def __init__(self, etcd: Etcd, views, idle_timeout: float, stop: threading.Event,
                 resume: bool = True, throttle: Throttle | None = None):
        self.etcd, self.views = etcd, tuple(views)
        self.idle_timeout, self.stop = idle_timeout, stop
        self.resume = resume
        self.throttle = throttle
        self._readers = _readers(self.views)
        self.prefix = watch_prefix(self._readers)
        self._backoff = Backoff(*RETRY_DELAYS)
        # The last revision the views are current with; None: a snapshot is due.
        self.revision: int | None = None
        self.snapshots = 0  # taken so far (a resync storm shows here)
        self._lost = False  # the watch failed: its resumption is worth a line in the log

    def start(self, name: str) -> threading.Thread:
        """Run in a daemon thread of its own: a watch may hang for its idle
        timeout, and stopping must not wait for it."""
        thread = threading.Thread(target=self.run, name=name, daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
                continue
            except WatchStalled as exc:
                # Routine where quiet is normal (the pools): not worth a line.
                LOG.debug("%s; watching again from revision %s", exc, self.revision)
                continue
            except RevisionCompacted as exc:
                LOG.warning("the etcd watch on %s cannot resume from revision %s (%s);"
                            " new snapshot", self.prefix, self.revision, exc)
                self._forget()
                delay = self._backoff.next()
            except DatastoreError as exc:
                if self.stop.is_set():  # the client was closed under the watch
                    return
                delay = self._backoff.next()
                self._lost = True
                if not self.resume:
                    self._forget()
                LOG.warning("lost the etcd watch on %s (%s); %s in %.1f s", self.prefix, exc,
                            "new snapshot" if self.revision is None
                            else f"resuming from revision {self.revision}", delay)
            except Exception:  # noqa: BLE001 - a bug must not silently stop following
                self._forget()
                delay = self._backoff.next()
                LOG.exception("following %s failed; new snapshot in %.1f s", self.prefix, delay)
            self.stop.wait(delay)

    def _forget(self) -> None:
        """What the views hold is no longer followed: a snapshot is due."""
        self.revision = None
        for view in self.views:
            view.reset()

    def _follow(self) -> None:
        """A snapshot unless the views are current with a revision etcd
        still has, then the watch from there until it fails (or stop)."""
        if self.revision is not None and (now := self.etcd.revision()) < self.revision:
            LOG.warning("etcd is at revision %d, behind the %d we saw (a new or restored "
                        "store); new snapshot", now, self.revision)
            self._forget()
        if self.revision is None:
            self.revision = snapshot(self.etcd, self.views)
            self.snapshots += 1
            self._backoff.reset()
            LOG.info("snapshot of %s at revision %d", self.prefix, self.revision)
            for view in self.views:
                view.batch_done(True, True)
        else:
            LOG.log(logging.INFO if self._lost else logging.DEBUG,
                    "watching %s again from revision %d", self.prefix, self.revision)
        self._lost = False
        watch = self.etcd.watch_prefix(self.prefix, self.revision + 1, self.idle_timeout)
        for batch in watch:
            if self.stop.is_set():
                return
            self._backoff.reset()
            changed = dict.fromkeys(self.views, False)
            for event in batch:
                kind = next((k for k in self._readers if event.key.startswith(k.prefix)), None)
                if kind is None:  # a key no view reads (a liveness key)
                    continue
                record = parse(kind, event.key, event.value, event.mod_revision)
                for view in self._readers[kind]:  # several views may read one key
                    if view.on_change(kind, event.key, record):
                        changed[view] = True
            for view, seen in changed.items():
                view.batch_done(seen, False)
            # Events come in revision order: the views are current with the last.
            self.revision = max(self.revision, batch[-1].mod_revision)
            # A batch its views saw no change in (other hosts' heartbeats)
            # costs them nothing and takes no turn.  What arrives while it
            # waits is the next batch, whole (Etcd.watch_prefix hands over
            # all that is queued).
            if self.throttle is not None and any(changed.values()) \
                    and self.stop.wait(self.throttle.delay()):
                return
