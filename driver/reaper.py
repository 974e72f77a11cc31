"""Deleting veth pairs off the request path.

Deleting a veth takes the kernel 20-30 ms (two netdevs unregistered, RCU
grace periods), which dockerd would otherwise wait for in every `docker
stop`.  DeleteEndpoint queues the deletion and answers at once; the
container was cut off at Leave, which removes its host routes.  Not at
Leave: dockerd then moves the container's end back to the host, and joins
the same pair again when a legacy link is removed (Sandbox.Refresh); a veth
gone under it leaves dockerd 28 an interface it closes twice (a panic) when
the container is removed.  A plugin killed with deletions still queued
leaves links behind: sweep() at the next start removes cali links that no
endpoint of this node owns.
"""

import logging
import queue
import threading

from datastore.resources import Resources
from driver import dataplane
from driver import endpoints as ep
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)


class LinkReaper:
    def __init__(self):
        self._queue = queue.Queue()
        self._thread = None
        self._lock = threading.Lock()

    def delete(self, ifname: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="link-reaper")
                self._thread.start()
        self._queue.put(ifname)

    def _run(self):
        while True:
            ifname = self._queue.get()
            try:
                dataplane.remove_veth(ifname)
            except KernelError as exc:
                LOG.warning("could not delete %s: %s", ifname, exc)


def sweep(resources: Resources, node: str) -> list[str]:
    """Delete the cali veths that no WorkloadEndpoint of this node owns."""
    owned = {w.spec.get("interfaceName") for w in ep.node_weps(resources, node)}
    removed = []
    for ifname in dataplane.links(ep.HOST_IF_PREFIX):
        if ifname not in owned and ep.is_host_ifname(ifname):
            LOG.info("removing leftover interface %s", ifname)
            dataplane.remove_veth(ifname)
            removed.append(ifname)
    return removed
