"""The node agent: register this node, then keep its routes, VTEP and NAT
(and policy, names, published ports and the anti-spoofing table) in step with etcd until
SIGTERM or SIGINT."""

import gc
import logging
import signal
import threading

from netaddr import IPNetwork

from agent import antispoofing, metrics, node
from agent.autodetect import node_address, node_address6
from agent.bgp.daemon import BirdDaemon, BirdPaths, bgp_off, installed
from agent.bgp.view import BgpView
from agent.errors import AgentError
from agent.liveness import Heartbeat
from agent.names.service import NameService
from agent.policy.engine import PolicyEngine, policy_off
from agent.published import PublishedPorts
from agent.routing.model import ClusterState
from agent.routing.reconciler import Reconciler
from agent.settings import AgentSettings
from datastore.errors import DatastoreUnavailable
from datastore.etcd import Etcd
from datastore.follower import RETRY_DELAYS, Follower, Throttle
from datastore.resources import Resources
from datastore.retry import Backoff
from datastore.settings import connect

LOG = logging.getLogger(__name__)


def run_agent(settings: AgentSettings, stop: threading.Event | None = None,
              registered: bool = False, metrics_socket=None,
              plugin_metrics: str | None = None) -> None:
    """Block until stop is set (by SIGTERM/SIGINT when run in the main
    thread).  registered: `run` has just registered the node and marked
    ClusterInformation ready (its first agent, see _register).
    metrics_socket: serve the node's metrics there (with the plugin
    workers' from the directory plugin_metrics).  Raises AgentError (e.g.
    NodeConflict) or KernelError when it cannot start."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    etcd = connect(settings.etcd)  # no round trip yet
    cluster = exporter = None
    try:
        if metrics_socket is not None:  # before the first round trip, which it counts
            cluster = metrics.ClusterMetrics(settings.nodename)
            health = (metrics.ResponderHealth(settings.names_health_path),) \
                if settings.names else ()
            exporter = metrics.serve(metrics_socket, cluster, plugin_metrics, *health)
        address, address6 = node_address(settings), node_address6(settings)
        LOG.info("node %s, address %s, IPv6 address %s", settings.nodename, address,
                 address6 or "none (IP6=none)")
        if not registered and not _register(etcd, settings, address, address6, stop):
            return
        heartbeat = Heartbeat(etcd, settings.nodename, str(address),
                              settings.heartbeat_interval).start()
        reconciler = Reconciler(etcd, settings.nodename, address, settings.resync_interval,
                                address6, bgp=settings.bgp)
        if settings.bgp and not installed():
            raise AgentError("CALICO_NETWORKING_BACKEND=bird needs BIRD 2's `bird` on PATH "
                             "(apt-get install bird2)")
        bird = BirdDaemon(BirdPaths(settings.run_dir)).start() if settings.bgp else None
        if bird is None:
            bgp_off(BirdPaths(settings.run_dir), settings.networking_backend)
        policy = PolicyEngine(settings.nodename, settings.policy_status_path,
                              settings.resync_interval,
                              settings.felix_env,
                              settings.etcd.endpoints) if settings.policy else None
        if policy is None:
            policy_off(settings.policy_status_path)
        names = _start_names(settings) if settings.names else None
        published = PublishedPorts(settings.nodename)
        bgp = bird and BgpView(settings.nodename, bird, settings.workload_prefix)
        views = tuple(v for v in (ClusterState(reconciler), policy, names and names.index,
                                  published, cluster, bgp, FreezeAfterSnapshot()) if v)
        thread = Follower(etcd, views, settings.watch_idle_timeout, stop,
                          throttle=Throttle()).start("follower")
        antispoofing.repair()
        while not stop.wait(antispoofing.CHECK_INTERVAL):
            antispoofing.repair()
            published.check()
        heartbeat.stop()
        if bird is not None:
            bird.stop()  # its routes stay, as ours do
        if names is not None:
            names.stop()
        if policy is not None:
            thread.join(1.0)  # let a sync in progress finish its nft write
            policy.stop()
        LOG.info("node agent stopped; routes are left in place")
    finally:
        etcd.close()
        if exporter is not None:
            exporter.shutdown()


def _start_names(settings: AgentSettings) -> NameService | None:
    """The name service, or None when it cannot start: routes and policy
    must not stop for names."""
    try:
        return NameService(settings.names_status_path, settings.names_health_path).start()
    except Exception:  # noqa: BLE001
        LOG.exception("names across hosts are off: the name service did not start")
        return None


def _register(etcd: Etcd, settings: AgentSettings, address: IPNetwork,
              address6: IPNetwork | None, stop: threading.Event) -> bool:
    """Register, waiting for etcd as long as it takes; False if stopped first.

    `run` does both steps itself before it starts its first agent, and tells
    it so (see plugin/cli/main.py).  They are here for the agent alone
    (`calico-libnetwork agent`) and for an agent `run` restarted after a
    crash, when the Node may have been deleted meanwhile.  Both are
    compare-and-swap writes that write nothing when all is in place."""
    resources = Resources(etcd)
    backoff = Backoff(*RETRY_DELAYS)  # etcd's return, as the follower waits for it
    while not stop.is_set():
        try:
            node.ensure_cluster_information(resources)
            node.register(resources, settings.nodename, address, settings.heartbeat_interval,
                          address6)
            return True
        except DatastoreUnavailable as exc:
            LOG.warning("cannot register node %s yet: %s", settings.nodename, exc)
            stop.wait(backoff.next())
    return False


class FreezeAfterSnapshot:
    """The last of the agent's views: after a snapshot, what the views hold
    (at 30,000 endpoints, about a million objects) is left out of the
    garbage collector's full collections (gc.freeze), which otherwise walk
    all of it every few thousand changes, 70 ms each.  That model holds no
    reference cycles: what the views replace or reset is freed by
    reference counting, frozen or not."""

    kinds = ()

    def reset(self) -> None:
        pass

    def on_change(self, kind, key, record) -> bool:
        return False

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if snapshot:
            gc.freeze()
