"""Brings this host's kernel in line with the cluster state: routes (ours
only, by protocol), the VTEP and its peers' ARP/FDB entries, NAT outgoing.

Between full resyncs it diffs the new desired state against what it last
programmed, so a change costs netlink calls for that change only; a full
resync (each snapshot, every resync_interval, after any failure) re-reads
the kernel first.  Nothing is written when nothing differs, so a restarted
agent leaves right routes alone.
"""

import logging
import time

from netaddr import IPNetwork

from agent import ipip, kernel, vxlan
from agent.errors import AgentError, KernelError
from agent.model import ClusterState
from agent.nat import Nat
from agent.routes import VXLAN_DEVICE, Local, desired_state, needs_ipip
from datastore.etcd import Etcd
from datastore.resources import Resources
from ipam.allocator import Ipam

LOG = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, etcd: Etcd, node: str, address: IPNetwork, resync_interval: float,
                 address6: IPNetwork | None = None):
        self.node, self.address, self.address6 = node, address, address6
        self.ipam = Ipam(etcd, node)
        self.resources = Resources(etcd)
        self.resync_interval = resync_interval
        self.nat, self.nat6 = Nat(4), Nat(6)
        self.vtep: vxlan.Vtep | None = None
        self._vtep_pools = None
        self._ipip = None  # checked once, when a pool first needs it
        self._connected = ()
        self._routes = self._neighbours = self._fdb = None  # as last programmed
        self._unroutable = {}
        self._foreign = set()  # destinations held by routes that are not ours
        self._last_full = 0.0
        self._dirty = True  # a step failed: re-read the kernel next time

    def __call__(self, state: ClusterState, changed: bool, snapshot: bool) -> None:
        full = snapshot or self._dirty or \
            time.monotonic() - self._last_full > self.resync_interval
        if changed or full:
            self.sync(state, full)

    def sync(self, state: ClusterState, full: bool = True) -> None:
        started = time.monotonic()
        if full:
            self._last_full = started
            self._connected = kernel.connected_subnets()
        self._dirty = False
        local = Local(self.node, self.address, self._connected,
                      vxlan=self._sync_vtep(state, full), ipip=self._ipip_ready(state),
                      address6=self.address6)
        desired = desired_state(state, local)
        self._log_unroutable(desired.unroutable)
        counts = self._sync_routes(desired.routes, full)
        if local.vxlan:
            self._sync_vxlan_peers(desired, full)
        for nat in (self.nat, self.nat6):
            try:
                nat.sync(list(state.pools.values()), full)
            except KernelError as exc:
                self._fail(exc)
        if counts or full:
            LOG.info("%s sync: %d routes (%s) in %.0f ms", "full" if full else "incremental",
                     len(desired.routes), counts or "no change",
                     (time.monotonic() - started) * 1000)

    # -- parts ------------------------------------------------------------

    def _sync_routes(self, desired: dict, full: bool) -> str:
        try:
            current = kernel.read_routes() if full or self._routes is None else self._routes
            changes = kernel.route_diff(desired, current)
            failed, foreign = kernel.apply_routes(changes) if changes else ([], [])
        except KernelError as exc:
            self._fail(exc)
            return ""
        for problem in failed:
            self._fail(problem)
        for route in foreign:
            if route.dst not in self._foreign:
                LOG.warning("not programming %s: a route to %s that is not ours exists",
                            route, route.dst)
        self._foreign = {r.dst for r in foreign} | (set() if full else self._foreign)
        self._routes = desired
        for route in changes.removed:
            LOG.info("removed route %s", route)
        return (f"+{len(changes.added) - len(foreign)} ~{len(changes.replaced)} "
                f"-{len(changes.removed)}" if changes else "")

    def _sync_vxlan_peers(self, desired, full: bool) -> None:
        try:
            if full or self._neighbours is None:
                self._neighbours, self._fdb = kernel.read_vxlan_peers(VXLAN_DEVICE)
            neighbours = kernel.diff({n.ip: n for n in desired.neighbours},
                                     {n.ip: n for n in self._neighbours})
            fdb = kernel.diff({f.mac: f for f in desired.fdb}, {f.mac: f for f in self._fdb})
            if neighbours or fdb:
                for problem in kernel.apply_vxlan_peers(VXLAN_DEVICE, neighbours, fdb):
                    self._fail(problem)
            self._neighbours, self._fdb = desired.neighbours, desired.fdb
        except KernelError as exc:
            self._fail(exc)

    def _sync_vtep(self, state: ClusterState, full: bool) -> bool:
        """True when vxlan.calico is ready for routes."""
        pools = [p for p in state.pools.values() if p.vxlan_mode != "Never" and p.version == 4]
        try:
            me = state.nodes.get(self.node)
            if not pools:
                if self.vtep is not None or (me and me.vtep_ip) or \
                        (full and kernel.link_exists(VXLAN_DEVICE)):
                    vxlan.remove_vtep(self.ipam, self.resources)
                    self.vtep = None
                return False
            key = sorted((p.name, str(p.cidr), p.disabled) for p in pools)
            recorded = me and self.vtep == (me.vtep_ip, me.vtep_mac)
            if full or not recorded or key != self._vtep_pools:
                self.vtep = vxlan.ensure_vtep(self.ipam, self.resources, pools,
                                              self.address.ip,
                                              kernel.mtu_of_address(self.address.ip))
                self._vtep_pools = key
            return True
        except AgentError as exc:
            self._fail(exc)
            return self.vtep is not None

    def _ipip_ready(self, state: ClusterState) -> bool:
        if not needs_ipip(state):
            return False
        if self._ipip is None:
            self._ipip = ipip.ensure_tunl0()
            if not self._ipip:
                LOG.warning("the kernel has no IPIP: routes in IPIP pools are not "
                            "programmed (use vxlanMode instead of ipipMode)")
        return self._ipip

    def _log_unroutable(self, unroutable: dict) -> None:
        for dst, reason in unroutable.items():
            if self._unroutable.get(dst) != reason:
                LOG.warning("no route to %s: %s", dst, reason)
        self._unroutable = unroutable

    def _fail(self, problem) -> None:
        LOG.error("%s (retrying with a full resync)", problem)
        self._dirty = True
