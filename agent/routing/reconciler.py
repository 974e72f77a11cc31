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

from agent.routing import ipip, kernel, vxlan
from agent.errors import AgentError
from agent.routing.model import ClusterState
from agent.routing.nat import Nat
from agent.routing.routes import Local, desired_state, needs_ipip
from datastore.etcd import Etcd
from datastore.resources import Resources
from ipam.allocator import Ipam
from ipam.pools import Pool
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, etcd: Etcd, node: str, address: IPNetwork, resync_interval: float,
                 address6: IPNetwork | None = None, bgp: bool = False):
        self.node, self.address, self.address6 = node, address, address6
        self.bgp = bgp  # BIRD routes the plain pools (Local.bgp)
        # The pools it allocates the tunnel addresses in: those of the
        # state being synced (the follower's routing view), not etcd's.
        self.ipam = Ipam(etcd, node, pool_cache=self)
        self._state: ClusterState | None = None
        self.resources = Resources(etcd)
        self.resync_interval = resync_interval
        self.nat, self.nat6 = Nat(4), Nat(6)
        self.vteps: dict[int, vxlan.Vtep] = {}  # IP version -> this node's VTEP
        self._vtep_pools = {}
        self._ipip = None  # checked once, when a pool first needs it
        self._connected = ()
        self._routes = None  # as last programmed
        self._peers = {}  # IP version -> (neighbours, fdb) as last programmed
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
        self._state = state
        if full:
            self._last_full = started
            self._connected = kernel.connected_subnets()
        self._dirty = False
        local = Local(self.node, self.address, self._connected,
                      vxlan=self._sync_vtep(state, full, 4), ipip=self._ipip_ready(state),
                      address6=self.address6, vxlan6=self._sync_vtep(state, full, 6),
                      bgp=self.bgp)
        desired = desired_state(state, local)
        self._log_unroutable(desired.unroutable)
        counts = self._sync_routes(desired.routes, full)
        if local.vxlan:
            self._sync_vxlan_peers(4, desired.neighbours, desired.fdb, full)
        if local.vxlan6:
            self._sync_vxlan_peers(6, desired.neighbours6, desired.fdb6, full)
        for nat in (self.nat, self.nat6):
            try:
                nat.sync(list(state.pools.values()), full)
            except KernelError as exc:
                self._fail(exc)
        if counts or full:
            LOG.info("%s sync: %d routes (%s) in %.0f ms", "full" if full else "incremental",
                     len(desired.routes), counts or "no change",
                     (time.monotonic() - started) * 1000)

    def current(self) -> list[Pool] | None:
        """The pools self.ipam reads (None before the first sync: etcd's)."""
        return None if self._state is None else self._state.current()

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

    def _sync_vxlan_peers(self, version: int, neighbours: set, fdb: set, full: bool) -> None:
        device = vxlan.FAMILIES[version].device
        try:
            if full or version not in self._peers:
                self._peers[version] = kernel.read_vxlan_peers(device, version)
            have_neighbours, have_fdb = self._peers[version]
            neighbour_changes = kernel.diff({n.ip: n for n in neighbours},
                                            {n.ip: n for n in have_neighbours})
            fdb_changes = kernel.diff({f.mac: f for f in fdb}, {f.mac: f for f in have_fdb})
            if neighbour_changes or fdb_changes:
                for problem in kernel.apply_vxlan_peers(device, neighbour_changes, fdb_changes):
                    self._fail(problem)
            self._peers[version] = (neighbours, fdb)
        except KernelError as exc:
            self._fail(exc)

    def _sync_vtep(self, state: ClusterState, full: bool, version: int) -> bool:
        """True when vxlan.calico (version 6: vxlan-v6.calico) is ready for routes."""
        pools = [p for p in state.pools.values()
                 if p.vxlan_mode != "Never" and p.version == version]
        address = self.address if version == 4 else self.address6
        vtep = self.vteps.get(version)
        try:
            me = state.nodes.get(self.node)
            recorded_vtep = me and me.vtep_of(version)
            if not pools or address is None:
                device = vxlan.FAMILIES[version].device
                if vtep is not None or (recorded_vtep and recorded_vtep[0]) or \
                        (full and kernel.link_exists(device)):
                    vxlan.remove_vtep(self.ipam, self.resources, version)
                    self.vteps.pop(version, None)
                return False
            key = sorted((p.name, str(p.cidr), p.disabled) for p in pools)
            recorded = me and vtep == recorded_vtep
            if full or not recorded or key != self._vtep_pools.get(version):
                self.vteps[version] = vxlan.ensure_vtep(self.ipam, self.resources, pools,
                                                        address.ip,
                                                        kernel.mtu_of_address(address.ip))
                self._vtep_pools[version] = key
                self._peers.pop(version, None)  # a rebuilt device (or new MAC) lost its peers
            return True
        except (AgentError, KernelError) as exc:
            self._fail(exc)
            return version in self.vteps

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
