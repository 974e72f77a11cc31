"""A network's profile is named after the network's name on every host, and
isolation between networks depends on it: CreateEndpoint never falls back to
the per-host NetworkID.  Through the HTTP face, against a real etcd and a
fake dockerd on a unix socket (the plugin's real DockerApi)."""

import json
import logging
import threading
import time

import pytest

from driver import network_driver
from driver.docker_api import DockerApi
from driver.networks import Networks
from tests.fake_dockerd import DOCKER_29_0, FakeDockerd
from tests.lab.common import wait_until
from tests.plugin.support import all_keys, call, make_client

NET = "9a" * 32
EP = "9b" * 32
NETWORK_KEY = f"/calico/libnetwork/v1/networks/{NET}"
WEP_KEY = ("/calico/resources/v3/projectcalico.org/workloadendpoints/libnetwork/"
           f"test--node-libnetwork-libnetwork-{EP}")
PROFILE_KEY = "/calico/resources/v3/projectcalico.org/profiles/net1"
TIMEOUT = 0.2  # DockerApi's, shortened


@pytest.fixture(autouse=True)
def short_waits(monkeypatch):
    monkeypatch.setattr(network_driver, "NAME_WAIT_SECONDS", 1.0)
    monkeypatch.setattr(network_driver, "NAME_LEARN_SECONDS", 2.0)


@pytest.fixture
def dockerd():
    with FakeDockerd(DOCKER_29_0) as fake:
        yield fake


def plugin(store, dockerd, **settings):
    return make_client(store, docker=DockerApi(dockerd.url, timeout=TIMEOUT), **settings)


CREATE_NETWORK = {
    "NetworkID": NET,
    "Options": {"com.docker.network.enable_ipv4": True, "com.docker.network.enable_ipv6": False,
                "com.docker.network.generic": {}},
    "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Gateway": "0.0.0.0/0",
                  "Pool": "0.0.0.0/0"}],
    "IPv6Data": []}
CREATE_ENDPOINT = {
    "NetworkID": NET, "EndpointID": EP,
    "Interface": {"Address": "192.168.50.7/32", "AddressIPv6": "", "MacAddress": ""},
    "Options": {}}


def recorded_name(store):
    kv = store.get(NETWORK_KEY)
    return kv and json.loads(kv.value)["name"]


def wait_for_name(store):
    deadline = time.monotonic() + 5
    while recorded_name(store) is None:
        assert time.monotonic() < deadline, "CreateNetwork's learning never recorded the name"
        time.sleep(0.02)


def endpoint_profiles(store):
    return json.loads(store.get(WEP_KEY).value)["spec"]["profiles"]


def test_name_known_in_etcd_needs_no_dockerd(store, dockerd):
    """dockerd restarting --restart=always containers calls CreateEndpoint
    before it serves its API; the name comes from etcd, dockerd is not asked."""
    dockerd.networks[NET] = "net1"
    assert call(plugin(store, dockerd), "NetworkDriver.CreateNetwork", CREATE_NETWORK) == (200, {})
    wait_for_name(store)
    dockerd.hang = True  # dockerd starting: accepts, answers nothing
    asked = len(dockerd.requests)
    restarted = plugin(store, dockerd)  # a new process: nothing cached in memory
    assert call(restarted, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 200
    assert len(dockerd.requests) == asked
    assert endpoint_profiles(store) == ["net1"]
    assert store.get(PROFILE_KEY) is not None


def test_name_learned_late(store, dockerd):
    """dockerd shows the network only some time after CreateNetwork returned:
    the first CreateEndpoint waits for CreateNetwork's learning."""
    client = plugin(store, dockerd)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK) == (200, {})
    threading.Timer(0.3, dockerd.networks.__setitem__, (NET, "net1")).start()
    status, body = call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    assert status == 200, body
    assert endpoint_profiles(store) == ["net1"]
    assert recorded_name(store) == "net1"


@pytest.mark.parametrize("failure, reason", [
    ("hang", f"did not answer within {TIMEOUT}s"),
    ("absent", "cannot reach dockerd at unix://"),
])
def test_dockerd_never_answers(store, dockerd, failure, reason):
    client = plugin(store, dockerd)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK) == (200, {})
    if failure == "hang":
        dockerd.hang = True
    else:
        dockerd.url = "unix:///nonexistent/docker.sock"
        client = plugin(store, dockerd)  # a plugin whose DOCKER_HOST is wrong
    before = all_keys(store)
    start = time.monotonic()
    status, body = call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    assert time.monotonic() - start < network_driver.NAME_WAIT_SECONDS + 2 * TIMEOUT + 0.5
    assert status == 500
    assert body["Err"].startswith(
        f"cannot create an endpoint on network {NET[:12]}: its name is unknown, and Calico "
        "names the network's profile, which isolates the network on every host, after it. ")
    assert reason in body["Err"]
    assert body["Err"].endswith(
        "Make DOCKER_HOST reach this host's dockerd (a managed plugin needs "
        "/var/run/docker.sock mounted), then start the container again")
    assert all_keys(store) == before  # no endpoint, no profile named after the id
    assert recorded_name(store) is None


def test_a_network_never_seen_is_not_recorded_without_its_name(store, dockerd):
    dockerd.hang = True
    status, body = call(plugin(store, dockerd), "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    assert status == 500 and "its name is unknown" in body["Err"]
    assert all_keys(store) == set()


def test_once_dockerd_answers_the_endpoint_is_created(store, dockerd):
    client = plugin(store, dockerd)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK) == (200, {})
    time.sleep(0.3)
    assert call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 500
    dockerd.networks[NET] = "net1"
    assert call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 200
    assert endpoint_profiles(store) == ["net1"]
    assert recorded_name(store) == "net1"


def test_without_profiles_no_name_is_needed(store, dockerd):
    dockerd.hang = True
    client = plugin(store, dockerd, create_profiles=False)
    assert call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)[0] == 200
    assert endpoint_profiles(store) == []
    assert not [k for k in all_keys(store) if "/profiles/" in k]


def test_a_name_that_cannot_be_recorded_is_not_passed_over(store, dockerd, monkeypatch,
                                                            caplog):
    """Another writer changes the network's record before each of our writes
    of its name: CreateNetwork's learning logs that it gave up, and
    CreateEndpoint refuses the endpoint (a restarted dockerd's CreateEndpoint
    would find no name in etcd) instead of going on without the record."""
    read = Networks.get

    def contested(self, network_id):
        network = read(self, network_id)
        if network is not None:
            store.put(NETWORK_KEY, network.to_json())  # same record, newer revision
        return network
    monkeypatch.setattr(Networks, "get", contested)
    caplog.set_level(logging.WARNING, logger=network_driver.__name__)
    dockerd.networks[NET] = "net1"
    client = plugin(store, dockerd)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK) == (200, {})
    status, body = call(client, "NetworkDriver.CreateEndpoint", CREATE_ENDPOINT)
    assert status == 500
    assert body["Err"].startswith(f"gave up recording the name of network {NET[:12]} after ")
    assert store.get(WEP_KEY) is None and store.get(PROFILE_KEY) is None
    assert recorded_name(store) is None
    gave_up = f"could not record the name 'net1' of network {NET[:12]}: gave up recording"
    assert wait_until(lambda: any(r.getMessage().startswith(gave_up) for r in caplog.records),
                      10, 0.05)
