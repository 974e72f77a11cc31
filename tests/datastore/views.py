"""Views for the follower's tests (test_follower.py, test_etcd_members.py):
a parser that counts its calls and a view that records what it is handed."""

import json
import threading


class Parses:
    """A parser that counts its calls; an unreadable value raises."""

    def __init__(self):
        self.calls = 0

    def __call__(self, key, value, revision):
        self.calls += 1
        return json.loads(value)


class Recorder:
    """A view that keeps what it is handed, and every record object it got."""

    def __init__(self, *kinds):
        self.kinds = kinds
        self.held, self.seen = {}, []
        self.snapshots = 0
        self.resets = 0
        self.on_snapshot = None
        # Cleared: the follower stops in batch_done after a watch batch
        # (holding) until it is set again.
        self.gate = threading.Event()
        self.gate.set()
        self.holding = threading.Event()

    def reset(self):
        self.held = {}
        self.resets += 1

    def on_change(self, kind, key, record):
        self.seen.append(record)
        old = self.held.pop(key, None)
        if record is not None:
            self.held[key] = record
        return old != record

    def batch_done(self, changed, snapshot):
        self.snapshots += snapshot
        if snapshot and self.on_snapshot:
            self.on_snapshot()
        if not snapshot and not self.gate.is_set():
            self.holding.set()
            self.gate.wait()
