"""Three Docker hosts with the plugin and its agent, and a three-member etcd
cluster, one member per host on the hosts' segment, with all three in
ETCD_ENDPOINTS (h1's first), as a user grows into (issue 24):

- the leader killed during a burst of `docker run` on the three hosts, then
  the first-listed member killed for good during the next: no run fails;
- compaction and defragmentation during a burst: no run fails;
- two members down (quorum lost): `docker run` fails within seconds with a
  message that says the cluster lost its quorum, running containers keep
  reaching each other, and when the members return a new `docker run`
  works and the agents route to it, without restarting anything.

    h1 eth1 10.0.12.1 (m1) --+
    h2 eth1 10.0.12.2 (m2) --+-- br0 (seg)
    h3 eth1 10.0.12.3 (m3) --+
"""

import time
import types
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.calico_host import CALICO, container_ip, docker, remove_all, start_plugin, wait
from tests.lab import EtcdCluster

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

NET = "net1"
PER_HOST = 4  # containers each host starts per burst, two at a time


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    hosts = [docker_host_factory(etcd=False) for _ in range(3)]
    docker_host_factory.lab.segment("seg", *((h.netns, f"10.0.12.{n}/24")
                                             for n, h in enumerate(hosts, 1)))
    cluster = EtcdCluster(places=[(h.netns, f"10.0.12.{n}") for n, h in enumerate(hosts, 1)])
    hosts[0].etcd = cluster  # h1 is closed last: the cluster outlives the others
    cluster.start()
    for host in hosts[1:]:
        host.etcd = types.SimpleNamespace(endpoints=cluster.endpoints, close=lambda: None)
    for host in hosts:
        host.plugin = start_plugin(host, IP_AUTODETECTION_METHOD="interface=eth1")
        docker(host, "network", "create", *CALICO, NET)
    yield hosts
    # While the cluster is whole: each container's endpoint goes from etcd.
    cluster.start()
    for host in hosts:
        remove_all(host)


@pytest.fixture
def cluster(hosts):
    """The cluster with every member running and a leader, after the test too."""
    cluster = hosts[0].etcd
    cluster.start()
    cluster.wait_for_leader()
    yield cluster
    cluster.start()


def burst(hosts, name, during):
    """PER_HOST containers started on each host, two at a time per host;
    `during()` once the first few have started.  The runs that failed."""
    with ThreadPoolExecutor(2 * len(hosts)) as pool:
        runs = [pool.submit(host.docker, "run", "-d", "--net", NET, "--name",
                            f"{name}-{host.name}-{n}", "busybox", "sleep", "600")
                for n in range(PER_HOST) for host in hosts]
        wait(lambda: sum(r.done() for r in runs) >= len(hosts), 60, "the first runs")
        during()
        results = [r.result() for r in runs]
    return [r.stderr.strip() for r in results if r.returncode]


def started(host, name):
    """Whether `docker run` of `name` worked; what a failed one left is removed."""
    if host.docker("run", "-d", "--net", NET, "--name", name, "busybox", "sleep",
                   "600").returncode == 0:
        return True
    host.docker("rm", "-f", name)
    return False


def pings(host, container, target):
    return host.docker("exec", container, "ping", "-c", "1", "-W", "2", target).returncode == 0


def test_the_leader_then_the_first_listed_member_killed_during_bursts_fail_no_run(hosts,
                                                                                 cluster):
    killed = []
    assert burst(hosts, "b1", lambda: killed.append(cluster.leader().kill())) == []
    cluster.start()  # the leader comes back
    cluster.wait_for_leader()
    first = cluster.members[0]
    assert burst(hosts, "b2", first.kill) == []
    assert not first.running
    assert burst(hosts, "b3", lambda: None) == []  # with the first-listed member gone
    # The agents followed it all: h3's container reaches h1's.
    target = container_ip(hosts[0], "b3-h1-0", NET)
    wait(lambda: pings(hosts[2], "b3-h3-0", target), 20, "h3's container to reach h1's")


def test_compaction_and_defragmentation_during_a_burst_fail_no_run(hosts, cluster):
    def compact_and_defrag():
        cluster.ctl("compact", str(cluster.revision()))
        cluster.ctl("defrag", "--cluster")

    assert burst(hosts, "c1", compact_and_defrag) == []
    target = container_ip(hosts[1], "c1-h2-0", NET)
    wait(lambda: pings(hosts[0], "c1-h1-0", target), 20, "h1's container to reach h2's")


def test_quorum_lost_fails_runs_fast_keeps_traffic_and_recovers(hosts, cluster):
    h1, h2, h3 = hosts
    assert started(h1, "q-a") and started(h2, "q-b")
    ip_b = container_ip(h2, "q-b", NET)
    wait(lambda: pings(h1, "q-a", ip_b), 20, "q-a to reach q-b")
    for member in cluster.members[1:]:
        member.kill()
    survivor = cluster.members[0]
    wait(lambda: not cluster.statuses().get(survivor, {}).get("leader"), 15,
         "the surviving member to see it has no leader")
    start = time.monotonic()
    failed = h3.docker("run", "-d", "--net", NET, "--name", "q-c", "busybox", "sleep", "600")
    took = time.monotonic() - start  # the client's timeout (3 s), not dockerd's
    assert failed.returncode != 0
    assert "the etcd cluster has no leader" in failed.stderr, failed.stderr
    assert "lost its quorum" in failed.stderr
    assert took < 20, f"docker run took {took:.1f} s to fail"
    # Running containers keep their network, across hosts.
    assert pings(h1, "q-a", ip_b) and pings(h2, "q-b", container_ip(h1, "q-a", NET))
    h3.docker("rm", "-f", "q-c")
    cluster.start()
    # No restart: the plugin serves again, and the agents route to what is new.
    wait(lambda: started(h3, "q-d"), 30, "docker run on h3 to work again")
    ip_d = container_ip(h3, "q-d", NET)
    wait(lambda: pings(h1, "q-a", ip_d), 30, "h1's container to reach h3's new one")
    print(f"docker run failed after {took:.1f} s with quorum lost: {failed.stderr.strip()}")
