"""The agent's cluster and IPAM metrics: a view of the follower against a
real etcd, served on a real socket and read back as Prometheus text.
Values as Felix and kube-controllers compute them (calico-metrics.md)."""

import math
import threading

import pytest

from agent import metrics
from agent.liveness import Heartbeat
from datastore.etcd import Etcd
from datastore.follower import Follower
from metrics import exposition, instruments, summary
from tests.agent.cluster import block_record, node_record, pool_record
from tests.agent.policy_records import wep
from tests.lab.common import wait_until
from tests.scrape import scrape, value


@pytest.fixture
def node_metrics(etcd_clean):
    """(etcd server, url): the h1 agent's metrics view on a follower, served."""
    etcd = Etcd(etcd_clean.endpoints, timeout=1.0)
    stop = threading.Event()
    view = metrics.ClusterMetrics("h1")
    sock = exposition.listen(0)
    server = metrics.serve(sock, view)
    beat = Heartbeat(etcd, "h1", "10.0.0.1/24", 0.2).start()  # keeps the watch busy
    thread = Follower(etcd, (view,), idle_timeout=5.0, stop=stop).start("follower")
    yield etcd_clean, f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    stop.set()
    beat.stop()
    thread.join(5)
    server.shutdown()
    sock.close()
    instruments.disable()
    etcd.close()


def put(server, record):
    key, raw = record
    server.put(key, raw.decode() if isinstance(raw, bytes) else raw)


def test_cluster_and_ipam_figures_follow_etcd(node_metrics):
    server, url = node_metrics
    for record in (node_record("h1", "10.0.0.1/24"), node_record("h2", "10.0.0.2/24"),
                   pool_record("p1", "10.65.0.0/16"), pool_record("p2", "10.66.0.0/16"),
                   # h1's block: two of h1's addresses, one borrowed by h2
                   block_record("10.65.0.0/26", "h1", [("10.65.0.1", "h1"),
                                                       ("10.65.0.2", "h1"),
                                                       ("10.65.0.3", "h2")]),
                   # a block affine to no node: h2's address in it is borrowed too
                   block_record("10.65.1.0/26", None, [("10.65.1.1", "h2")]),
                   # a block in no pool
                   block_record("10.70.0.0/26", "h1", [("10.70.0.1", "h1")]),
                   wep("a", "10.65.0.1"), wep("b", "10.65.0.2"),
                   wep("c", "10.65.0.3", node="h3")):  # h3: no Node record
        put(server, record)

    def figures():
        s = scrape(url)
        return {
            "local": value(s, "felix_active_local_endpoints"),
            "weps": value(s, "felix_cluster_num_workload_endpoints"),
            "hosts": value(s, "felix_cluster_num_hosts"),
            "in_use": {(dict(k[1])["ippool"], dict(k[1])["node"]): v for k, v in s.items()
                       if k[0] == "ipam_allocations_in_use"},
            "borrowed": {(dict(k[1])["ippool"], dict(k[1])["node"]): v for k, v in s.items()
                         if k[0] == "ipam_allocations_borrowed"},
            "blocks": {(dict(k[1])["ippool"], dict(k[1])["node"]): v for k, v in s.items()
                       if k[0] == "ipam_blocks"},
            "resyncs": value(s, "felix_resyncs_started"),
        }

    expected = {
        "local": 2, "weps": 3, "hosts": 3,
        # every pool and Node at 0 first (no_ippool is not seeded), as kube-controllers
        "in_use": {("p1", "h1"): 2, ("p1", "h2"): 2, ("p2", "h1"): 0, ("p2", "h2"): 0,
                   ("no_ippool", "h1"): 1},
        "borrowed": {("p1", "h1"): 0, ("p1", "h2"): 2, ("p2", "h1"): 0, ("p2", "h2"): 0},
        "blocks": {("p1", "h1"): 1, ("p1", "no_affinity"): 1, ("no_ippool", "h1"): 1},
        "resyncs": 1,
    }
    assert wait_until(lambda: figures() == expected, 10), figures()

    server.ctl("del", wep("c", "10.65.0.3", node="h3")[0])
    put(server, block_record("10.65.0.0/26", "h1", [("10.65.0.1", "h1")]))
    server.ctl("del", block_record("10.65.1.0/26", None)[0])
    expected.update(weps=2, hosts=2)
    expected["in_use"].update({("p1", "h1"): 1, ("p1", "h2"): 0})
    expected["borrowed"].update({("p1", "h2"): 0})
    del expected["blocks"]["p1", "no_affinity"]
    assert wait_until(lambda: figures() == expected, 10), figures()

    # etcd lost and back: the follower resumes from its revision, no resync,
    # and the same figures
    server.kill()
    server.start()
    assert wait_until(lambda: figures() == expected, 30), figures()


def test_nothing_but_the_resync_count_before_the_first_snapshot():
    view = metrics.ClusterMetrics("h1")
    assert [f.name for f in view.collect()] == ["felix_resyncs_started"]
    view.batch_done(True, True)
    assert "felix_cluster_num_hosts" in [f.name for f in view.collect()]


def test_a_scrape_during_a_batch_gets_the_figures_of_the_last_whole_batch():
    from datastore.records import WORKLOAD_ENDPOINTS, parse

    view = metrics.ClusterMetrics("h1")
    view.batch_done(True, True)

    def endpoints():
        return next(f.samples[0].value for f in view.collect()
                    if f.name == "felix_cluster_num_workload_endpoints")

    for name in ("a", "b"):
        key, raw = wep(name)
        view.on_change(WORKLOAD_ENDPOINTS, key, parse(WORKLOAD_ENDPOINTS, key, raw, 1))
        assert endpoints() == 0  # "a" alone would be half of this batch
    view.batch_done(True, False)
    assert endpoints() == 2


def test_the_agent_counts_its_etcd_round_trips(node_metrics):
    _, url = node_metrics
    assert wait_until(lambda: value(scrape(url), "calico_libnetwork_etcd_requests_total",
                                    component="agent", op="watch") == 1, 5)
    s = scrape(url)
    assert value(s, "calico_libnetwork_etcd_requests_total", component="agent", op="range") >= 1
    assert value(s, "calico_libnetwork_etcd_requests_total", component="agent", op="put") >= 1
    assert value(s, "calico_libnetwork_etcd_retries_total", component="agent",
                 reason="conflict") is not None
    assert value(s, "process_resident_memory_bytes") > 0
    assert value(s, "felix_int_dataplane_apply_time_seconds_count") == 0


def test_the_apply_time_summary_has_felix_quantiles_over_its_window(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(summary.time, "monotonic", lambda: clock[0])
    timing = summary.QuantileSummary("felix_int_dataplane_apply_time_seconds", "doc",
                                     max_age=600)

    def samples():
        (family,) = timing.collect()
        return {(s.name, s.labels.get("quantile")): s.value for s in family.samples}
    assert all(math.isnan(samples()["felix_int_dataplane_apply_time_seconds", q])
               for q in ("0.5", "0.9", "0.99"))
    for ms in range(1, 101):  # 1 ms ... 100 ms
        timing.observe(ms / 1000)
    s = samples()
    assert (s["felix_int_dataplane_apply_time_seconds", "0.5"],
            s["felix_int_dataplane_apply_time_seconds", "0.9"],
            s["felix_int_dataplane_apply_time_seconds", "0.99"]) == (0.051, 0.091, 0.1)
    assert s["felix_int_dataplane_apply_time_seconds_count", None] == 100
    assert s["felix_int_dataplane_apply_time_seconds_sum", None] == pytest.approx(5.05)
    clock[0] += 601  # out of the window: no quantile, the totals stay
    timing.observe(0.5)
    s = samples()
    assert s["felix_int_dataplane_apply_time_seconds", "0.99"] == 0.5
    assert s["felix_int_dataplane_apply_time_seconds_count", None] == 101
