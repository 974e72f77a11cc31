"""Telling a live node from a stale one.

Every agent rewrites /calico/libnetwork/v1/nodes-alive/<node> every
heartbeat interval (and deletes it when it stops cleanly).  A node is live
when that key changes within a few intervals of being looked at: the check
compares etcd revisions, never clocks, so hosts need not agree on the time.
A node whose key is missing or stands still is stale (its agent crashed,
or its host is gone).  The key also lives under the agents' watch prefix,
so a healthy watch always sees traffic.
"""

import json
import logging
import threading
import time

from datastore.errors import DatastoreError
from datastore.etcd import Etcd

LOG = logging.getLogger(__name__)

ALIVE_PREFIX = "/calico/libnetwork/v1/nodes-alive/"
STALE_AFTER = 3  # heartbeat intervals without a change


def alive_key(node: str) -> str:
    return ALIVE_PREFIX + node


def read_heartbeat(etcd: Etcd, node: str) -> dict | None:
    """The last heartbeat of node ({"node", "ipv4Address", "time"}), if any."""
    kv = etcd.get(alive_key(node))
    return None if kv is None else kv.json()


def live_nodes(etcd: Etcd, nodes, interval: float) -> set[str]:
    """Which of nodes beat within STALE_AFTER intervals from now."""
    seen = {}
    for node in nodes:
        kv = etcd.get(alive_key(node))
        if kv is not None:
            seen[node] = kv.mod_revision
    live = set()
    deadline = time.monotonic() + STALE_AFTER * interval
    while seen.keys() - live and time.monotonic() < deadline:
        time.sleep(min(0.5, interval / 2))
        for node in seen.keys() - live:
            kv = etcd.get(alive_key(node))
            if kv is not None and kv.mod_revision != seen[node]:
                live.add(node)
    return live


class Heartbeat:
    """Writes this node's liveness key from a thread of its own."""

    def __init__(self, etcd: Etcd, node: str, address: str, interval: float):
        self.etcd, self.node, self.address, self.interval = etcd, node, address, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        self.etcd.put(alive_key(self.node), json.dumps(
            {"node": self.node, "ipv4Address": self.address, "time": time.time()}))

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except DatastoreError as exc:
                LOG.warning("cannot write this node's heartbeat: %s", exc)

    def stop(self) -> None:
        """Stop beating and delete the key: a clean stop leaves no stale node
        for a successor to wait for."""
        self._stop.set()
        self._thread.join(self.interval + 5)
        try:
            self.etcd.delete(alive_key(self.node))
        except DatastoreError as exc:
            LOG.warning("cannot delete this node's heartbeat: %s", exc)
