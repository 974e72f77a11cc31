"""A three-member etcd cluster (tests/lab EtcdCluster, on loopback) with all
of its members in the client's endpoints, as a user sets ETCD_ENDPOINTS:
requests fail over when a member dies, the leader killed under writes fails
none, a lost quorum fails requests within the timeout with a message that
says so and they work again when it returns; the follower's watch resumes
from its revision after a member loss or a lost quorum (no resync), and
resyncs once, not in a storm, when that revision was compacted meanwhile;
compaction and defragmentation under a watch change nothing; TLS with
several members."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from datastore.errors import DatastoreUnavailable, QuorumLost
from datastore.etcd import Etcd
from datastore.follower import Follower
from datastore.records import Kind
from tests.datastore.views import Parses, Recorder
from tests.lab import EtcdCluster
from tests.lab.common import wait_until
from tests.lab.etcd import EtcdTls

THINGS = "/calico/test/things/"
TIMEOUT = 3.0  # the client's, as the plugin's default


@pytest.fixture
def cluster(etcd_cluster):
    """The module's cluster with every member running, a leader, and no keys."""
    etcd_cluster.start()
    etcd_cluster.wait_for_leader()
    etcd_cluster.wipe()
    return etcd_cluster


@pytest.fixture
def client(cluster):
    etcd = Etcd(cluster.endpoints, timeout=TIMEOUT)
    yield etcd
    etcd.close()


@pytest.fixture
def follow(cluster):
    """follow(n=1, endpoints=cluster's, **client) -> [(Follower, Recorder)]:
    n started followers, each with its own client and view of THINGS."""
    stop, started, clients = threading.Event(), [], []

    def start(n=1, endpoints=None, **options):
        made = []
        for i in range(n):
            etcd = Etcd(endpoints or cluster.endpoints, timeout=TIMEOUT, **options)
            clients.append(etcd)
            view = Recorder(Kind("Thing", THINGS, Parses()))
            follower = Follower(etcd, (view,), idle_timeout=5.0, stop=stop)
            started.append(follower.start(f"follower-{i}"))
            made.append((follower, view))
        assert wait_until(lambda: all(view.snapshots for _, view in made), 10)
        return made

    yield start
    stop.set()
    for thread in started:
        thread.join(5)
    for etcd in clients:
        etcd.close()


def put(cluster, key, n):
    cluster.put(THINGS + key, json.dumps({"n": n}))


def held(view):
    return {key[len(THINGS):]: record["n"] for key, record in view.held.items()}


def first_listed(cluster):
    return cluster.members[0]


# -- requests -------------------------------------------------------------------

def test_the_first_listed_member_down_for_good_costs_nothing(cluster, client):
    client.put(THINGS + "a", "1")
    first_listed(cluster).kill()
    start = time.monotonic()
    for n in range(20):
        assert client.put(THINGS + f"k{n}", str(n)) > 0
    assert client.get(THINGS + "k19").value == b"19"
    assert time.monotonic() - start < 5  # failed over once, not once per request


def test_the_leader_killed_under_writes_fails_none(cluster, client):
    written, stop = [], threading.Event()

    def write():
        n = 0
        while not stop.is_set():
            assert client.create(THINGS + f"w{n}", str(n)) is not None
            written.append(n)
            n += 1

    with ThreadPoolExecutor(2) as pool:
        writers = [pool.submit(write)]
        assert wait_until(lambda: len(written) > 10, 5)
        cluster.leader().kill()
        count = len(written)
        assert wait_until(lambda: len(written) > count + 10 or writers[0].done(), 15)
        stop.set()
        writers[0].result()
    assert len(client.get_prefix(THINGS)[0]) == len(written)


def test_a_lost_quorum_fails_requests_fast_with_the_reason_then_recovers(cluster, client):
    client.put(THINGS + "a", "1")
    survivor = cluster.members[2]
    for member in cluster.members[:2]:
        member.kill()
    # The survivor notices it has no leader within a few election timeouts.
    assert wait_until(lambda: not cluster.statuses().get(survivor, {}).get("leader"), 10)
    for request in (lambda: client.get(THINGS + "a"), lambda: client.put(THINGS + "b", "2")):
        start = time.monotonic()
        with pytest.raises(QuorumLost) as failure:
            request()
        assert time.monotonic() - start < TIMEOUT + 1.5
        message = str(failure.value)
        assert "has lost its quorum" in message and f"{survivor.endpoints} (no leader)" in message
        assert isinstance(failure.value, DatastoreUnavailable)
    cluster.start()
    # The same client (no restart) works again once the cluster has a leader.
    assert wait_until(lambda: _works(client), 15)
    assert client.get(THINGS + "a").value == b"1"


def _works(client):
    try:
        client.put(THINGS + "b", "2")
        return True
    except DatastoreUnavailable:
        return False


def test_compaction_and_defragmentation_under_load_fail_nothing(cluster, client, follow):
    [(follower, view)] = follow()
    for n in range(50):
        client.put(THINGS + "a", json.dumps({"n": n}))
    cluster.ctl("compact", str(cluster.revision()))
    done = threading.Event()
    failures = []

    def write():
        n = 0
        while not done.is_set():
            try:
                client.put(THINGS + "b", json.dumps({"n": n}))
            except DatastoreUnavailable as exc:
                failures.append(exc)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        cluster.ctl("defrag", "--cluster")
        cluster.ctl("compact", str(cluster.revision()))
    finally:
        done.set()
        writer.join(10)
    put(cluster, "c", 1)
    assert wait_until(lambda: held(view).get("c") == 1, 5)
    assert not failures and follower.snapshots == 1 and view.resets == 1


# -- the follower ---------------------------------------------------------------

def test_the_watch_resumes_on_another_member_without_a_resync(cluster, follow):
    put(cluster, "a", 1)
    [(follower, view)] = follow()
    assert wait_until(lambda: held(view) == {"a": 1}, 5)
    first_listed(cluster).kill()  # the member the watch is on
    cluster.wait_for_leader()  # etcdctl does not wait out an election
    put(cluster, "b", 2)
    cluster.leader().kill()  # and then the leader, if that was another one
    cluster.members[0].start()  # a quorum again
    cluster.wait_for_leader()
    put(cluster, "c", 3)
    assert wait_until(lambda: held(view) == {"a": 1, "b": 2, "c": 3}, 15)
    assert follower.snapshots == 1 and view.resets == 1


def test_the_watch_resumes_when_quorum_returns_without_a_resync(cluster, follow):
    put(cluster, "a", 1)
    [(follower, view)] = follow()
    assert wait_until(lambda: held(view) == {"a": 1}, 5)
    for member in cluster.members[1:]:
        member.kill()
    # The survivor cancels the watch (it has no leader); the view keeps what it holds.
    time.sleep(6)
    assert held(view) == {"a": 1}
    cluster.start()
    put(cluster, "b", 2)
    assert wait_until(lambda: held(view) == {"a": 1, "b": 2}, 15)
    assert follower.snapshots == 1 and view.resets == 1


def test_a_revision_compacted_while_the_watch_was_lost_means_one_resync_each(cluster,
                                                                            follow):
    """Five followers busy with a batch while the member they watch dies,
    then writes and a compaction past everything they saw: each resumes,
    finds its revision compacted and takes one new snapshot, no more."""
    put(cluster, "a", 1)
    followers = follow(5)
    for _, view in followers:
        view.gate.clear()
    put(cluster, "a", 2)
    assert wait_until(lambda: all(view.holding.is_set() for _, view in followers), 5)
    first_listed(cluster).kill()  # every watch is on it
    cluster.wait_for_leader()  # etcdctl does not wait out an election
    for n in range(3, 8):
        put(cluster, "a", n)
    cluster.ctl("compact", str(cluster.revision()))
    for _, view in followers:
        view.gate.set()
    assert wait_until(lambda: all(held(view) == {"a": 7} for _, view in followers), 15)
    time.sleep(2)  # time for a storm to show
    assert [follower.snapshots for follower, _ in followers] == [2] * 5
    put(cluster, "b", 1)
    assert wait_until(lambda: all(held(view) == {"a": 7, "b": 1} for _, view in followers), 5)


# -- TLS ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_cluster(etcd_pki):
    server, client = etcd_pki["server"], etcd_pki["client"]
    tls = EtcdTls(etcd_pki["ca"].cert, server.cert, server.key, client.cert, client.key)
    with EtcdCluster(tls=tls) as made:
        yield made


def test_tls_with_several_members(tls_cluster, etcd_pki, follow):
    files = {"ca_cert": etcd_pki["ca"].cert, "cert": etcd_pki["client"].cert,
             "key": etcd_pki["client"].key}
    tls_cluster.start()
    tls_cluster.wait_for_leader()
    assert tls_cluster.endpoints.count("https://") == 3
    client = Etcd(tls_cluster.endpoints, timeout=TIMEOUT, **files)
    try:
        [(follower, view)] = follow(endpoints=tls_cluster.endpoints, **files)
        client.put(THINGS + "a", json.dumps({"n": 1}))
        assert wait_until(lambda: held(view) == {"a": 1}, 5)
        first_listed(tls_cluster).kill()
        client.put(THINGS + "b", json.dumps({"n": 2}))
        assert wait_until(lambda: held(view) == {"a": 1, "b": 2}, 15)
        assert follower.snapshots == 1
    finally:
        client.close()
        tls_cluster.start()
