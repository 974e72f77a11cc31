"""After a start, the endpoints dockerd no longer has (their containers
stopped while the plugin was down) are deleted; those it holds, and those
written since the start, stay; without dockerd's answer nothing goes.  Those
it holds that have no DNS names (joined by a version that wrote none) get
their names, network name and labels."""

import datetime
import json

import pytest

from datastore.resources import Resources
from driver import endpoint_sweep
from driver import endpoints as ep
from driver.docker_api import DockerApi
from driver.errors import DockerUnavailable
from driver.network_driver import NetworkDriver
from tests.fake_dockerd import DOCKER_26, FakeDockerd
from tests.plugin.support import CREATE_NETWORK, NET, NODE, call, endpoint, make_client

NAMES = (ep.DNS_NAMES_ANNOTATION, ep.NETWORK_NAME_ANNOTATION)

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


def old_version(store, dockerd, n):
    """Endpoints 1..n joined by a plugin whose Join learned no names (its
    learning gave up before dockerd showed the containers), as 68fb88e left
    them: no DNS names, no network name, no labels."""
    old = make_client(store, docker=DockerApi(dockerd.url), label_poll_timeout=0.1)
    assert call(old, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    for i in range(1, n + 1):
        create_and_join(old, i)
    old.application.extensions["calico_services"].get(NetworkDriver).close()  # its learning ends
    for i in range(1, n + 1):
        as_old_version_wrote(store, i)
    return old


def as_old_version_wrote(store, n):
    """Endpoint n as 68fb88e wrote it: no DNS names, no network name, no labels."""
    def strip(wep):
        for key in NAMES:
            wep.annotations.pop(key, None)
        wep.labels.pop("tier", None)
        return wep
    Resources(store).modify("WorkloadEndpoint", ep.wep_name(NODE, endpoint(n)), strip,
                            namespace=ep.NAMESPACE)


def stored(store, n):
    return Resources(store).get("WorkloadEndpoint", ep.wep_name(NODE, endpoint(n)),
                                ep.NAMESPACE)


def show_container(dockerd, n, name):
    container = f"{n:064x}"
    dockerd.containers[container] = {"Labels": {"org.projectcalico.label.tier": "db"}}
    dockerd.inspect[container] = {"Name": "/" + name, "NetworkSettings": {"Networks": {
        "net1": {"NetworkID": NET, "Aliases": [container[:12]]}}}}
    dockerd.endpoints.setdefault(NET, {})[container] = endpoint(n)


def test_endpoints_joined_by_an_older_version_get_their_names(store, dockerd, no_netlink):
    old_version(store, dockerd, 3)
    show_container(dockerd, 1, "Workload-A")
    show_container(dockerd, 2, "workload-b")  # it has names already: not asked again
    Resources(store).modify("WorkloadEndpoint", ep.wep_name(NODE, endpoint(2)),
                            lambda wep: wep.annotations.update({
                                ep.DNS_NAMES_ANNOTATION: '["b"]'}) or wep,
                            namespace=ep.NAMESPACE)
    # 3 is gone from dockerd: the sweep's, not given names.
    started = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    upgraded = make_client(store, docker=DockerApi(dockerd.url), label_endpoints=True)
    driver = upgraded.application.extensions["calico_services"].get(NetworkDriver)
    assert endpoint_sweep.complete(driver, started) == [endpoint(1)]
    wep = stored(store, 1)
    assert json.loads(wep.annotations[ep.DNS_NAMES_ANNOTATION]) == ["workload-a",
                                                                      f"{1:064x}"[:12]]
    assert wep.annotations[ep.NETWORK_NAME_ANNOTATION] == "net1"
    assert wep.annotations[ep.SANDBOX_ANNOTATION]  # the old Join's, kept
    assert wep.labels["tier"] == "db"
    assert stored(store, 2).annotations[ep.DNS_NAMES_ANNOTATION] == '["b"]'
    assert not set(NAMES) & set(stored(store, 3).annotations)
    # A replay writes nothing.
    revision = wep.revision
    assert endpoint_sweep.complete(driver, started) == []
    assert stored(store, 1).revision == revision


def test_an_endpoint_deleted_meanwhile_is_not_written_back(store, dockerd, no_netlink):
    old = old_version(store, dockerd, 1)
    show_container(dockerd, 1, "workload-a")
    upgraded = make_client(store, docker=DockerApi(dockerd.url))
    driver = upgraded.application.extensions["calico_services"].get(NetworkDriver)
    started = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    asked = driver.docker.endpoint_container

    def removed_while_asking(network_id, endpoint_id):
        container = asked(network_id, endpoint_id)
        call(old, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": endpoint_id})
        return container
    driver.docker.endpoint_container = removed_while_asking
    assert endpoint_sweep.complete(driver, started) == []
    assert endpoints_left(store) == [] and sandbox_claims(store) == 0
