"""An endpoint's DNS names and network name reach its WorkloadEndpoint in the
background after Join, from one inspect of its container: through the HTTP
face, a real etcd and a fake dockerd (the plugin's real DockerApi)."""

import json
import time

import pytest

from driver.docker_api import DockerApi
from driver.sandboxes import PREFIX as SANDBOXES
from tests.fake_dockerd import DOCKER_20_10, FakeDockerd
from tests.plugin.support import call, make_client
from tests.plugin.test_network_names import CREATE_ENDPOINT, CREATE_NETWORK, EP, NET, WEP_KEY

CONTAINER = "c0ffee" + "1" * 58


@pytest.fixture
def dockerd():
    with FakeDockerd(DOCKER_20_10) as fake:
        fake.networks[NET] = "net1"
        yield fake


def annotations(store, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        notes = json.loads(store.get(WEP_KEY).value)["metadata"]["annotations"]
        if "libnetwork.projectcalico.org/dns-names" in notes or time.monotonic() > deadline:
            return notes
        time.sleep(0.05)


def joined(store, dockerd, **settings):
    """A client whose endpoint has joined, dockerd not showing its container yet."""
    client = make_client(store, docker=DockerApi(dockerd.url, timeout=0.5), **settings)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    assert call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 200
    assert call(client, "NetworkDriver.Join", {
        "NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/c0ffee",
        "Options": {}})[0] == 200
    return client


def test_names_are_recorded_once_dockerd_shows_the_container(store, dockerd, no_netlink,
                                                              round_trips):
    client = make_client(store, docker=DockerApi(dockerd.url, timeout=0.5),
                         label_endpoints=True, label_poll_timeout=5.0)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    assert call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 200
    assert round_trips(client, "NetworkDriver.Join", {
        "NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/c0ffee",
        "Options": {}})[0] == 200
    assert no_netlink
    time.sleep(0.3)  # dockerd shows the container only later
    dockerd.containers[CONTAINER] = {"Labels": {"org.projectcalico.label.tier": "db"}}
    dockerd.inspect[CONTAINER] = {"Name": "/Workload-E", "NetworkSettings": {"Networks": {
        "net1": {"NetworkID": NET, "Aliases": ["db", CONTAINER[:12]]}}}}
    dockerd.endpoints[NET] = {CONTAINER: EP}
    notes = annotations(store)
    assert json.loads(notes["libnetwork.projectcalico.org/dns-names"]) == \
        ["workload-e", "db", CONTAINER[:12]]
    assert notes["libnetwork.projectcalico.org/network-name"] == "net1"
    assert notes["libnetwork.projectcalico.org/sandbox"]  # Join's, kept
    assert json.loads(store.get(WEP_KEY).value)["metadata"]["labels"]["tier"] == "db"
    # One write, on the revision Join wrote: no read.
    assert [name for name, _ in round_trips.made if name.startswith("learn-ep")] == \
        [f"learn-ep-{EP[:12]}"]
    # The background write kept the process's copy current: Leave and
    # DeleteEndpoint cost no more than after any Join.
    ids = {"NetworkID": NET, "EndpointID": EP}
    assert round_trips(client, "NetworkDriver.Leave", ids) == (200, {}, 0)
    assert round_trips(client, "NetworkDriver.DeleteEndpoint", ids) == (200, {}, 1)
    assert store.get(WEP_KEY) is None and store.get_prefix(SANDBOXES)[0] == []


def test_names_shown_after_the_poll_timeout_are_still_recorded(store, dockerd, no_netlink):
    """A busy dockerd (a Swarm manager restarting its tasks) shows the
    container only after label_poll_timeout: the names still arrive."""
    joined(store, dockerd, label_poll_timeout=0.2)
    time.sleep(0.5)  # past the poll timeout
    dockerd.containers[CONTAINER] = {"Labels": {}}
    dockerd.inspect[CONTAINER] = {"Name": "/web.1.abc", "NetworkSettings": {"Networks": {
        "net1": {"NetworkID": NET, "Aliases": ["web", CONTAINER[:12]]}}}}
    dockerd.endpoints[NET] = {CONTAINER: EP}
    notes = annotations(store, timeout=10.0)
    assert json.loads(notes["libnetwork.projectcalico.org/dns-names"]) == \
        ["web.1.abc", "web", CONTAINER[:12]]


def test_without_dockerd_the_endpoint_still_works(store, no_netlink):
    client = make_client(store, create_profiles=False, label_poll_timeout=0.3)  # NoDocker
    assert call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 200
    assert call(client, "NetworkDriver.Join", {
        "NetworkID": NET, "EndpointID": EP, "SandboxKey": "", "Options": {}})[0] == 200
    time.sleep(0.6)
    notes = json.loads(store.get(WEP_KEY).value)["metadata"]["annotations"]
    assert "libnetwork.projectcalico.org/dns-names" not in notes


def test_a_swarm_tasks_service_labels_are_recorded_without_labelling(store, dockerd, no_netlink):
    """A Swarm task's service and stack labels reach its endpoint even with
    CALICO_LIBNETWORK_LABEL_ENDPOINTS off (policy selects services by them);
    its other labels do not."""
    joined(store, dockerd, label_poll_timeout=5.0)
    swarm = {"com.docker.swarm.service.name": "db",
             "com.docker.swarm.service.id": "yev1q7lcn31qyxk10nhugr0ys",
             "com.docker.stack.namespace": "shop"}
    dockerd.containers[CONTAINER] = {"Labels": {
        **swarm, "com.docker.swarm.task.id": "t" * 25, "com.docker.swarm.node.id": "n" * 25,
        "org.projectcalico.label.tier": "db"}}
    dockerd.inspect[CONTAINER] = {"Name": "/db.1.abc", "NetworkSettings": {"Networks": {
        "net1": {"NetworkID": NET, "Aliases": [CONTAINER[:12]]}}}}
    dockerd.endpoints[NET] = {CONTAINER: EP}
    annotations(store)
    labels = json.loads(store.get(WEP_KEY).value)["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if not k.startswith("projectcalico.org/")} == swarm
