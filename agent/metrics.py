"""The agent's metrics: the cluster and IPAM figures (a view of the one
follower), and the node's /metrics answer, which the agent serves.

Why the agent serves the port: its figures need one process (a custom
collector over this view, Felix's quantile summary, series that go away
with their pool or node), which prometheus_client's multiprocess mode
cannot give.  The plugin's gunicorn workers count in multiprocess files
instead, which the agent reads at each scrape (plugin/metrics.py).  `run`
binds the port and hands the socket to each agent it starts, so a
restarted agent serves it again without a gap in which another process
could take it.

Names and meanings are Calico's (reference: calico-metrics.md): Felix's
felix_cluster_num_hosts, felix_cluster_num_workload_endpoints,
felix_active_local_endpoints and felix_resyncs_started, and
kube-controllers' ipam_* gauges computed the same way from the blocks.
"""

import threading
from collections import Counter
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, UnknownMetricFamily

from agent.names.health import responder_health

from datastore.records import HOST_ENDPOINTS, NODES, WORKLOAD_ENDPOINTS, Kind
from ipam.blocks import BLOCKS, AllocationBlock
from ipam.pools import POOLS
from metrics import exposition, instruments

# kube-controllers' pseudo-labels (kube-controllers/pkg/controllers/node/ipam.go).
NO_POOL, NO_AFFINITY, UNKNOWN_NODE = "no_ippool", "no_affinity", "unknown_node"


class BlockUse(NamedTuple):
    """What the IPAM gauges need of one block, counted as it arrives."""
    cidr: object  # IPNetwork
    affine: str  # the affine node, or NO_AFFINITY
    in_use: Counter  # allocation's node (or UNKNOWN_NODE) -> addresses
    borrowed: Counter  # node -> addresses it holds in a block affine to another or none

    @classmethod
    def of(cls, block: AllocationBlock) -> "BlockUse":
        affine = block.host or NO_AFFINITY
        owners = [(a.get("secondary") or {}).get("node") or UNKNOWN_NODE
                  for a in block.attributes]
        in_use = Counter(owners[i] for i in block.allocations
                         if i is not None and i < len(owners))
        borrowed = Counter({node: n for node, n in in_use.items()
                            if node != UNKNOWN_NODE and (block.host is None or node != affine)})
        return cls(block.cidr, affine, in_use, borrowed)


class Figures(NamedTuple):
    """The gauges as of the last complete batch."""
    local_endpoints: int
    workload_endpoints: int
    hosts: int
    in_use: dict  # (pool, node) -> addresses
    borrowed: dict
    blocks: dict  # (pool, affine node) -> blocks


class ClusterMetrics:
    """A follower view; also a prometheus_client collector of what it saw.

    The figures are worked out when a scrape asks for them after a change
    (not at each batch: that walk of every endpoint and block would cost
    each change in the cluster), from whole batches: during a batch or a
    resync a scrape gets the last figures, never a batch half read."""

    kinds = (WORKLOAD_ENDPOINTS, HOST_ENDPOINTS, NODES, POOLS, BLOCKS)

    def __init__(self, nodename: str):
        self.nodename = nodename
        self.figures: Figures | None = None  # None: no snapshot read yet
        self.resyncs = 0
        self._resyncing = False
        self._stale = False  # changed since the figures were worked out
        self._in_batch = False  # changes came that their batch_done has not closed
        self._lock = threading.Lock()  # the follower's changes against a scrape
        self.reset()

    def reset(self) -> None:
        """A resync starts (the follower lost its watch, or begins)."""
        with self._lock:
            self.endpoints: dict[str, str] = {}  # key -> node
            self.host_endpoints: dict[str, str] = {}
            self.nodes: set[str] = set()
            self.pools = {}  # name -> Pool
            self.blocks: dict[str, BlockUse] = {}
            if not self._resyncing:  # a lost watch, then its snapshot: one resync
                self.resyncs += 1
            self._resyncing = True

    def on_change(self, kind: Kind, key: str, record) -> bool:
        name = key[len(kind.prefix):]
        use = record and BlockUse.of(record) if kind is BLOCKS else None
        with self._lock:
            self._in_batch = True
            if kind is WORKLOAD_ENDPOINTS:
                _put(self.endpoints, key, record and record.node)
            elif kind is HOST_ENDPOINTS:
                _put(self.host_endpoints, key, record and record.node)
            elif kind is NODES:
                (self.nodes.add if record is not None else self.nodes.discard)(name)
            elif kind is POOLS:
                _put(self.pools, name, record)
            elif kind is BLOCKS:
                _put(self.blocks, key, use)
        return True

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        with self._lock:
            self._in_batch = False
            if snapshot:
                self.figures = self._figures()
                self._resyncing = self._stale = False
            elif changed:
                self._stale = True

    def _figures(self) -> Figures:
        local = sum(1 for node in self.endpoints.values() if node == self.nodename) + \
            sum(1 for node in self.host_endpoints.values() if node == self.nodename)
        hosts = self.nodes | set(self.endpoints.values()) | set(self.host_endpoints.values())
        # Every pool and known node shows 0 rather than nothing, as in kube-controllers.
        in_use = {(pool, node): 0 for pool in self.pools for node in self.nodes}
        borrowed = dict(in_use)
        blocks = {}
        for block in self.blocks.values():
            pool = self._pool_of(block.cidr)
            blocks[pool, block.affine] = blocks.get((pool, block.affine), 0) + 1
            for table, counts in ((in_use, block.in_use), (borrowed, block.borrowed)):
                for node, n in counts.items():
                    table[pool, node] = table.get((pool, node), 0) + n
        return Figures(local, len(self.endpoints), len(hosts), in_use, borrowed, blocks)

    def _pool_of(self, cidr) -> str:
        for pool in self.pools.values():
            if cidr in pool.cidr:
                return pool.name
        return NO_POOL

    def collect(self):
        with self._lock:
            if self._stale and not (self._resyncing or self._in_batch):
                self.figures, self._stale = self._figures(), False
            figures, resyncs = self.figures, self.resyncs
        # Felix's counter has no _total, which prometheus_client's Counter
        # would add: untyped under the exact name (rate() reads it alike).
        yield UnknownMetricFamily("felix_resyncs_started",
                                  "etcd resyncs (snapshots) the agent started", resyncs)
        if figures is None:  # kube-controllers too reports nothing before its first sync
            return
        for name, doc, value in (
                ("felix_active_local_endpoints", "workload and host endpoints on this host",
                 figures.local_endpoints),
                ("felix_cluster_num_workload_endpoints", "workload endpoints in the cluster",
                 figures.workload_endpoints),
                ("felix_cluster_num_hosts", "hosts with a Node, a workload endpoint or a host "
                 "endpoint in the cluster", figures.hosts)):
            yield GaugeMetricFamily(name, doc, value)
        for name, doc, table in (
                ("ipam_allocations_in_use", "IPs currently allocated in IPAM to a workload or "
                 "tunnel endpoint", figures.in_use),
                ("ipam_allocations_borrowed", "IPs currently allocated in IPAM to a workload or "
                 "tunnel endpoint, where the allocation was borrowed from a block affine to "
                 "another node", figures.borrowed),
                ("ipam_blocks", "IPAM blocks currently allocated for the IP pool",
                 figures.blocks)):
            family = GaugeMetricFamily(name, doc, labels=("ippool", "node"))
            for (pool, node), value in sorted(table.items()):
                family.add_metric((pool, node), value)
            yield family


def _put(table: dict, key, value) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


class ResponderHealth:
    """The names responder's health as its watchdog last wrote it (read at
    each scrape; nothing while no watchdog runs)."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        health = responder_health(self.path)
        if health["answering"] is None:
            return
        yield GaugeMetricFamily(
            "calico_libnetwork_dns_responder_answering",
            "1 while the names responder answers its watchdog (containers' questions are "
            "intercepted), 0 while they go straight to their nameservers",
            1 if health["answering"] else 0)
        yield CounterMetricFamily(
            "calico_libnetwork_dns_interception_withdrawals",
            "how often the watchdog took the interception away from a responder that did "
            "not answer", health.get("withdrawals", 0))


def serve(sock, view: ClusterMetrics, plugin_dir: str | None = None, *collectors):
    """Serve the node's metrics on `sock`: the agent's (its counters, `view`,
    `collectors`, its process_*) and, with `plugin_dir`, the plugin workers'
    files."""
    own = CollectorRegistry(auto_describe=False)
    instruments.enable_agent(own)
    own.register(view)
    for collector in collectors:
        own.register(collector)
    return exposition.serve_node(sock, own, plugin_dir)
