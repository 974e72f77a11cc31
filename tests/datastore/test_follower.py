"""The follower against a real etcd: a snapshot of what its views subscribe
to, the watch after it, resumed from its revision after etcd restarts, a
new snapshot when the watched revision is compacted or the store is new,
each key parsed once for every view of its kind, and what arrived while the
views were busy handed over as one batch; followers behind `etcd grpc-proxy`
(README: many hosts).  A cluster of several members: test_etcd_members.py."""

import json
import threading
import time

import pytest

from datastore.etcd import Etcd
from datastore.follower import Follower, Throttle, watch_prefix
from datastore.records import Kind
from tests.datastore.views import Parses, Recorder
from tests.lab.common import wait_until
from tests.lab.grpc_proxy import EtcdGrpcProxy

THINGS = "/calico/test/things/"
OTHERS = "/calico/test/others/"


@pytest.fixture
def kinds():
    return (Kind("Thing", THINGS, Parses()), Kind("Other", OTHERS, Parses()))


@pytest.fixture
def follow(etcd_clean):
    """follow(*views): a started Follower (idle timeout 1 s)."""
    etcd = Etcd(etcd_clean.endpoints, timeout=1.0)
    stop = threading.Event()
    threads = []

    def start(*views, throttle=None):
        threads.append(Follower(etcd, views, idle_timeout=1.0, stop=stop,
                                throttle=throttle).start("follower"))

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)
    etcd.close()


def put(server, key, value):
    server.put(key, json.dumps(value))


def test_snapshot_then_watch_with_each_key_parsed_once_for_every_view(etcd_clean, kinds,
                                                                      follow):
    things, others = kinds
    put(etcd_clean, THINGS + "a", {"n": 1})
    put(etcd_clean, OTHERS + "x", {"n": 9})
    both, just_things = Recorder(things, others), Recorder(things)
    follow(both, just_things)
    assert wait_until(lambda: both.held == {THINGS + "a": {"n": 1}, OTHERS + "x": {"n": 9}}, 5)
    assert just_things.held == {THINGS + "a": {"n": 1}}
    put(etcd_clean, THINGS + "b", {"n": 2})
    etcd_clean.ctl("del", THINGS + "a")
    etcd_clean.put(THINGS + "c", "not json")  # unreadable: absent
    assert wait_until(lambda: just_things.held == {THINGS + "b": {"n": 2}}, 5)
    assert wait_until(lambda: len(just_things.seen) == 4, 5)
    # One parse per value (the deletion needs none), one record for both views.
    assert things.parse.calls == 3 and others.parse.calls == 1
    things_seen_by_both = [r for r in both.seen if r != {"n": 9}]
    assert len(things_seen_by_both) == len(just_things.seen)
    assert all(a is b for a, b in zip(things_seen_by_both, just_things.seen))
    assert both.snapshots == just_things.snapshots == 1


def test_etcd_restarted_means_the_watch_resumes_and_catches_up(etcd_clean, kinds, follow):
    """No new snapshot: the view keeps what it holds while etcd is down, and
    the watch resumes from the last revision it saw."""
    things, _ = kinds
    put(etcd_clean, THINGS + "a", {"n": 1})
    view = Recorder(things)
    follow(view)
    assert wait_until(lambda: view.held == {THINGS + "a": {"n": 1}}, 5)
    etcd_clean.kill()
    time.sleep(1.5)  # the watch is lost, and retried
    assert view.held == {THINGS + "a": {"n": 1}}
    etcd_clean.start()
    put(etcd_clean, THINGS + "b", {"n": 2})  # written while nothing watched
    assert wait_until(lambda: view.held == {THINGS + "a": {"n": 1},
                                            THINGS + "b": {"n": 2}}, 20)
    assert view.snapshots == 1 and view.resets == 1


def test_a_new_store_behind_the_revision_seen_means_a_new_snapshot(etcd_clean, kinds, follow):
    """etcd recreated empty (or restored from an older backup) while the
    watch was down: its revision is behind the one the view is current
    with, so resuming would miss everything; a new snapshot instead."""
    things, _ = kinds
    for n in range(5):
        put(etcd_clean, THINGS + "a", {"n": n})
    view = Recorder(things)
    follow(view)
    assert wait_until(lambda: view.held == {THINGS + "a": {"n": 4}}, 5)
    etcd_clean.close()  # its data goes too
    etcd_clean.start()
    put(etcd_clean, THINGS + "b", {"n": 1})
    assert wait_until(lambda: view.held == {THINGS + "b": {"n": 1}}, 20)
    assert view.snapshots == 2


def test_a_compacted_revision_means_a_new_snapshot(etcd_clean, kinds, follow):
    """Between the snapshot and the watch, two writes and a compaction past
    the first: the watch's revision is gone, and a new snapshot brings them."""
    things, _ = kinds
    view = Recorder(things)

    def write_and_compact():
        if view.snapshots == 1:
            put(etcd_clean, THINGS + "a", {"n": 1})
            put(etcd_clean, THINGS + "a", {"n": 2})
            revision = json.loads(etcd_clean.ctl("get", THINGS + "a", "-w", "json").stdout)
            etcd_clean.ctl("compact", str(revision["header"]["revision"]))

    view.on_snapshot = write_and_compact
    follow(view)
    assert wait_until(lambda: view.held == {THINGS + "a": {"n": 2}}, 10)
    assert view.snapshots == 2


def test_a_quiet_watch_is_replaced_at_once_without_a_snapshot(etcd_clean, kinds, follow,
                                                              monkeypatch):
    """Nothing written under the views' prefix for the idle timeout (1 s):
    a new watch from the same revision, without a backoff."""
    watches, real = [], Etcd.watch_prefix

    def counted(self, prefix, start_revision, idle_timeout):
        watches.append(start_revision)
        return real(self, prefix, start_revision, idle_timeout)
    monkeypatch.setattr(Etcd, "watch_prefix", counted)
    view = Recorder(kinds[0])
    follow(view)
    assert wait_until(lambda: len(watches) >= 3, 5)
    assert view.snapshots == 1 and len(set(watches)) == 1


def test_the_watch_covers_every_kind_and_no_more(kinds):
    assert watch_prefix(kinds) == "/calico/test/"
    assert watch_prefix(kinds[:1]) == THINGS


def test_followers_behind_etcd_grpc_proxy_snapshot_and_watch_through_it(etcd_clean, kinds):
    """What the agent asks of etcd (paged ranges, a transaction, a watch)
    works through the proxy."""
    things, _ = kinds
    stop, threads = threading.Event(), []
    with EtcdGrpcProxy([etcd_clean.endpoints]) as proxy:
        etcd = Etcd(proxy.endpoints, timeout=2.0)
        try:
            # More than a page (500 keys) of the snapshot's range read.
            for first in range(0, 600, 100):
                assert etcd.commit(creates=[(f"{THINGS}{n:04d}", json.dumps({"n": n}))
                                            for n in range(first, first + 100)])
            views = Recorder(things), Recorder(things)
            threads += [Follower(etcd, (view,), idle_timeout=5.0, stop=stop).start("follower")
                        for view in views]
            assert wait_until(lambda: all(len(v.held) == 600 for v in views), 10)
            put(etcd_clean, THINGS + "new", {"n": -1})  # written to etcd, not through the proxy
            assert wait_until(lambda: all(v.held.get(THINGS + "new") == {"n": -1}
                                          for v in views), 5)
            assert [v.snapshots for v in views] == [1, 1]
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
            etcd.close()


def test_what_arrives_while_the_views_are_busy_is_one_batch(etcd_clean, kinds, follow):
    things, _ = kinds

    class Slow(Recorder):
        """Busy for 0.5 s with the first batch of the watch."""
        batches = 0

        def batch_done(self, changed, snapshot):
            super().batch_done(changed, snapshot)
            if not snapshot:
                self.batches += 1
                if self.batches == 1:
                    time.sleep(0.5)

    view = Slow(things)
    follow(view)
    assert wait_until(lambda: view.snapshots == 1, 5)
    writer = Etcd(etcd_clean.endpoints)
    try:
        for n in range(20):  # 20 revisions, a few ms apart
            writer.put(f"{THINGS}{n:02d}", json.dumps({"n": n}))
    finally:
        writer.close()
    assert wait_until(lambda: len(view.held) == 20, 10)
    assert view.batches <= 3  # the first write, what came meanwhile (maybe split in two)


class Batches(Recorder):
    """Counts the watch's batches and when each came."""

    def __init__(self, *kinds):
        super().__init__(*kinds)
        self.times = []

    def batch_done(self, changed, snapshot):
        super().batch_done(changed, snapshot)
        if changed and not snapshot:
            self.times.append(time.monotonic())


def test_a_throttled_follower_takes_a_burst_at_once_then_one_batch_per_interval(
        etcd_clean, kinds, follow):
    """As Felix's apply throttle: the first batches at once, then under a
    steady stream of writes one per interval holding all that came; a batch
    of keys no view reads takes no turn."""
    things, others = kinds
    view = Batches(things, others)  # the watch is on /calico/test/
    follow(view, throttle=Throttle(burst=3, interval=0.3))
    assert wait_until(lambda: view.snapshots == 1, 5)
    writer = Etcd(etcd_clean.endpoints)
    try:
        for n in range(6):  # keys watched that no view reads (heartbeats) take no turn
            writer.put(f"/calico/test/unread/{n}", "{}")
            time.sleep(0.02)
        time.sleep(0.1)
        wrote = []
        for n in range(3):  # the burst: each handed over at once
            wrote.append(time.monotonic())
            writer.put(f"{THINGS}{n:02d}", json.dumps({"n": n}))
            assert wait_until(lambda: len(view.held) == n + 1, 2, interval=0.005)
        lags = [applied - written for written, applied in zip(wrote, view.times)]
        assert max(lags) < 0.2, lags
        for n in range(3, 40):  # a write every 20 ms for 0.75 s
            writer.put(f"{THINGS}{n:02d}", json.dumps({"n": n}))
            time.sleep(0.02)
    finally:
        writer.close()
    assert wait_until(lambda: len(view.held) == 40, 5)
    # 37 writes in about 0.75 s: after the burst of 3 (the bucket refilled by
    # a tenth meanwhile lets no fourth through), a few batches, none within
    # the interval
    gaps = [b - a for a, b in zip(view.times[2:], view.times[3:])]
    assert 2 <= len(gaps) <= 5 and min(gaps) >= 0.2, view.times
