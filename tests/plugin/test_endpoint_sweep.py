"""After a start, the endpoints dockerd no longer has (their containers
stopped while the plugin was down) are deleted; those it holds, and those
written since the start, stay; without dockerd's answer nothing goes."""

import datetime

import pytest

from datastore.resources import Resources
from driver import endpoint_sweep
from driver import endpoints as ep
from driver.docker_api import DockerApi
from driver.errors import DockerUnavailable
from driver.network_driver import NetworkDriver
from tests.fake_dockerd import DOCKER_26, FakeDockerd
from tests.plugin.support import CREATE_NETWORK, NET, NODE, call, endpoint, make_client



def create_and_join(client, n):
    ids = {"NetworkID": NET, "EndpointID": endpoint(n)}
    assert call(client, "NetworkDriver.CreateEndpoint", {
        **ids, "Options": {}, "Interface": {"Address": f"192.168.0.{n}/32", "AddressIPv6": "",
                                           "MacAddress": ""}})[0] == 200
    assert call(client, "NetworkDriver.Join", {
        **ids, "Options": {}, "SandboxKey": f"/var/run/docker/netns/{n:012x}"})[0] == 200


def endpoints_left(store):
    return sorted(w.spec["endpoint"] for w in Resources(store).list("WorkloadEndpoint",
                                                                    ep.NAMESPACE))


def sandbox_claims(store):
    return len(store.get_prefix("/calico/libnetwork/v1/sandboxes/")[0])


@pytest.fixture
def dockerd():
    with FakeDockerd(DOCKER_26) as fake:
        fake.networks[NET] = "net1"
        yield fake


def test_endpoints_dockerd_no_longer_has_are_deleted(store, dockerd, no_netlink):
    client = make_client(store, docker=DockerApi(dockerd.url))
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    for n in (1, 2, 3):
        create_and_join(client, n)
    dockerd.endpoints[NET] = {"c" * 64: endpoint(1)}  # 2 and 3 stopped while we were down
    started = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    # Endpoint 3 was written since the start: it may not have joined yet.
    Resources(store).modify("WorkloadEndpoint", ep.wep_name(NODE, endpoint(3)),
                            lambda wep: wep.metadata.update(creationTimestamp=(
                                started + datetime.timedelta(seconds=5)).strftime(
                                    "%Y-%m-%dT%H:%M:%SZ")) or wep, namespace=ep.NAMESPACE)
    restarted = make_client(store, docker=DockerApi(dockerd.url))
    driver = restarted.application.extensions["calico_services"].get(NetworkDriver)
    assert endpoint_sweep.sweep(driver, started) == [endpoint(2)]
    assert endpoints_left(store) == [endpoint(1), endpoint(3)]
    assert sandbox_claims(store) == 2
    # dockerd forgot the network itself: its endpoints go too.
    del dockerd.networks[NET]
    assert endpoint_sweep.sweep(driver, started) == [endpoint(1)]


def test_without_dockerd_nothing_is_deleted(store, dockerd, no_netlink):
    client = make_client(store, docker=DockerApi(dockerd.url))
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    create_and_join(client, 1)
    dockerd.hang = True  # as while dockerd starts
    restarted = make_client(store, docker=DockerApi(dockerd.url, timeout=0.2))
    driver = restarted.application.extensions["calico_services"].get(NetworkDriver)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
    with pytest.raises(DockerUnavailable):
        endpoint_sweep.sweep(driver, later)
    assert endpoints_left(store) == [endpoint(1)]
