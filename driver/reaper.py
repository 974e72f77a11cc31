"""Deleting veth pairs off the request path.

Deleting a veth takes the kernel 20-30 ms (two netdevs unregistered, RCU
grace periods), which dockerd would otherwise wait for in every `docker
stop`.  Leave queues the deletion and answers at once; the container is cut
off immediately anyway, because its host routes go first.  A plugin killed
with deletions still queued leaves links behind: sweep() at the next start
removes cali links that no endpoint of this node owns.

dockerd may join an endpoint again right after its Leave (it does so when a
legacy link is removed: libnetwork's Sandbox.Refresh), and the pair must
then survive: Join takes its name back from the queue with keep().
"""

import logging
import queue
import threading

from datastore.resources import Resources
from driver import dataplane
from driver import endpoints as ep

LOG = logging.getLogger(__name__)


class LinkReaper:
    def __init__(self):
        self._queue = queue.Queue()
        self._lock = threading.Lock()  # guards what follows
        self._thread = None
        self._queued = set()  # names to delete, in the queue
        self._deleting = None  # (name, Event set when done) while one is deleted

    def delete(self, ifname: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="link-reaper")
                self._thread.start()
            if ifname in self._queued or (self._deleting and self._deleting[0] == ifname):
                return  # Leave and DeleteEndpoint both ask
            self._queued.add(ifname)
        self._queue.put(ifname)

    def keep(self, ifname: str) -> None:
        """Do not delete ifname after all; when its deletion is under way,
        wait for it to end (the caller then makes the pair anew)."""
        with self._lock:
            self._queued.discard(ifname)
            deleting = self._deleting
        if deleting is not None and deleting[0] == ifname:
            deleting[1].wait()

    def _run(self):
        while True:
            ifname = self._queue.get()
            with self._lock:
                if ifname not in self._queued:
                    continue  # kept
                self._queued.discard(ifname)
                self._deleting = (ifname, threading.Event())
            try:
                dataplane.remove_veth(ifname)
            except dataplane.DataplaneError as exc:
                LOG.warning("could not delete %s: %s", ifname, exc)
            finally:
                with self._lock:
                    done, self._deleting = self._deleting[1], None
                done.set()


def sweep(resources: Resources, node: str) -> list[str]:
    """Delete the cali veths that no WorkloadEndpoint of this node owns."""
    owned = {w.spec.get("interfaceName") for w in resources.list("WorkloadEndpoint", ep.NAMESPACE)
             if w.spec.get("node") == node}
    removed = []
    for ifname in dataplane.links(ep.HOST_IF_PREFIX):
        if ifname not in owned and ep.is_host_ifname(ifname):
            LOG.info("removing leftover interface %s", ifname)
            dataplane.remove_veth(ifname)
            removed.append(ifname)
    return removed
