"""The routing view on the follower against a real etcd: a healthy watch
(kept busy by the heartbeat) takes one snapshot; when etcd is killed and
comes back, the watch resumes from its revision and the view catches up with what
changed meanwhile."""

import threading
import time

import pytest
from netaddr import IPNetwork

from agent.liveness import Heartbeat
from agent.routing.model import ClusterState
from datastore.etcd import Etcd
from datastore.follower import Follower
from tests.agent.cluster import affinity_record, node_record
from tests.lab.common import wait_until


class Recorder:
    def __init__(self):
        self.owners = {}
        self.batches = 0
        self.snapshots = 0

    def __call__(self, state, changed, snapshot):
        self.owners = dict(state.block_owners())
        self.batches += 1
        self.snapshots += snapshot


@pytest.fixture
def follower(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=1.0)
    stop = threading.Event()
    recorder = Recorder()
    follower = Follower(etcd, (ClusterState(recorder),), idle_timeout=1.0, stop=stop)
    beat = Heartbeat(etcd, "h1", "10.0.0.1/24", 0.2).start()
    thread = follower.start("follower")
    yield follower, recorder, etcd_clean
    stop.set()
    beat.stop()
    thread.join(5)
    etcd.close()


def put(server, record):
    key, value = record
    server.put(key, value.decode())


def owns(recorder, cidr, node):
    return lambda: recorder.owners.get(IPNetwork(cidr)) == node


def test_watch_follows_changes_without_resnapshotting(follower):
    follower, recorder, server = follower
    assert follower.prefix == "/calico/"  # where the heartbeat writes
    put(server, affinity_record("h2", "192.168.1.0/26"))
    assert wait_until(owns(recorder, "192.168.1.0/26", "h2"), 5)
    server.ctl("del", "/calico/ipam/v2/host/h2/ipv4/block/192.168.1.0-26")
    assert wait_until(lambda: not recorder.owners, 5)
    # Longer than the idle timeout: the heartbeat keeps the watch alive.
    assert not wait_until(lambda: recorder.snapshots > 1, 2.5)


def test_etcd_killed_and_restarted_resumes_the_watch_and_catches_up(follower):
    follower, recorder, server = follower
    put(server, node_record("h2", "10.0.0.2/24"))
    put(server, affinity_record("h2", "192.168.1.0/26"))
    assert wait_until(owns(recorder, "192.168.1.0/26", "h2"), 5)
    server.kill()
    snapshots = recorder.snapshots
    time.sleep(2.5)  # etcd down a while
    server.start()
    # Changed while the agent was not watching (directly, with etcdctl).
    put(server, affinity_record("h3", "192.168.3.0/26"))
    server.ctl("del", "/calico/ipam/v2/host/h2/ipv4/block/192.168.1.0-26")
    assert wait_until(lambda: recorder.owners == {IPNetwork("192.168.3.0/26"): "h3"}, 20)
    assert recorder.snapshots == snapshots  # resumed from its revision: no resync
