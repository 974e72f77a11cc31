"""The plugin's calls into dockerd against a fake dockerd on a unix socket:
the API version is negotiated (dockerd 29.0-29.2 refuse the 1.41 the plugin
once pinned), asked once per DockerApi, asked again when dockerd changes
under it, and every failure is bounded by the timeout and says why."""

import time

import docker
import docker.errors
import pytest

from driver.docker_api import DockerApi
from driver.errors import DockerUnavailable
from tests.fake_dockerd import DOCKER_20_10, DOCKER_28, DOCKER_29_0, DOCKER_29_7, FakeDockerd

NET = "4e" * 32
EP = "5f" * 32
CONTAINER = "6a" * 32


@pytest.fixture
def dockerd():
    with FakeDockerd(DOCKER_29_0) as fake:
        fake.networks[NET] = "net1"
        yield fake


def test_the_fake_refuses_old_versions_as_dockerd_29_does(dockerd):
    pinned = docker.APIClient(base_url=dockerd.url, version="1.41", timeout=1)
    with pytest.raises(docker.errors.APIError) as refused:
        pinned.inspect_network(NET)
    assert refused.value.status_code == 400
    assert refused.value.explanation == (
        "client version 1.41 is too old. Minimum supported API version is 1.44, "
        "please upgrade your client to a newer version")


@pytest.mark.parametrize("versions", [DOCKER_20_10, DOCKER_28, DOCKER_29_0, DOCKER_29_7],
                         ids=["20.10", "28", "29.0", "29.7"])
def test_negotiates_the_version_each_dockerd_offers(versions):
    with FakeDockerd(versions) as dockerd:
        dockerd.networks[NET] = "net1"
        api = DockerApi(dockerd.url)
        assert api.network_name(NET) == "net1"
        assert api.api_version == versions[0]
        assert ("GET", f"/v{versions[0]}/networks/{NET}") in dockerd.requests


def test_version_is_asked_once_per_instance(dockerd):
    api = DockerApi(dockerd.url)
    for _ in range(5):
        assert api.network_name(NET) == "net1"
    assert dockerd.versions_asked() == 1
    assert DockerApi(dockerd.url).network_name(NET) == "net1"
    assert dockerd.versions_asked() == 2


def test_dockerd_upgraded_under_the_plugin_is_negotiated_again(dockerd):
    dockerd.api_version, dockerd.min_version = DOCKER_20_10
    api = DockerApi(dockerd.url)
    assert api.network_name(NET) == "net1"
    assert api.api_version == "1.41"
    dockerd.api_version, dockerd.min_version = DOCKER_29_0  # dockerd restarted as 29.0
    assert api.network_name(NET) == "net1"
    assert api.api_version == "1.52"
    assert dockerd.versions_asked() == 2


def test_endpoint_container(dockerd):
    dockerd.endpoints[NET] = {CONTAINER: EP}
    dockerd.containers[CONTAINER] = {"Labels": {"org.projectcalico.label.app": "web"}}
    dockerd.inspect[CONTAINER] = {"Name": "/workload-A", "NetworkSettings": {"Networks": {
        "other": {"NetworkID": "1" * 64, "Aliases": ["elsewhere"]},
        "net1": {"NetworkID": NET, "Aliases": ["web", CONTAINER[:12]],
                 "DNSNames": ["workload-A", "web", CONTAINER[:12], "host-a"]}}}}
    api = DockerApi(dockerd.url)
    found = api.endpoint_container(NET, EP)
    assert found.labels == {"org.projectcalico.label.app": "web"}
    assert found.network == "net1"
    assert found.dns_names == ("workload-A", "web", CONTAINER[:12], "host-a")
    assert api.endpoint_container(NET, "7b" * 32) is None  # not shown yet


def test_endpoint_container_of_docker_20_10(dockerd):
    """No DNSNames before Docker 25; Aliases may be null."""
    dockerd.endpoints[NET] = {CONTAINER: EP}
    dockerd.containers[CONTAINER] = {"Labels": None}
    dockerd.inspect[CONTAINER] = {"Name": "/db", "NetworkSettings": {"Networks": {
        "net1": {"NetworkID": NET, "Aliases": None}}}}
    found = DockerApi(dockerd.url).endpoint_container(NET, EP)
    assert (found.labels, found.network, found.dns_names) == ({}, "net1", ("db", CONTAINER[:12]))


def test_unknown_network_says_so(dockerd):
    with pytest.raises(DockerUnavailable, match=f"dockerd at {dockerd.url} does not know "
                                                 f"network {'7c' * 6}"):
        DockerApi(dockerd.url).network_name("7c" * 32)


def test_no_dockerd_says_where_it_looked(tmp_path):
    url = f"unix://{tmp_path}/docker.sock"
    with pytest.raises(DockerUnavailable) as failure:
        DockerApi(url).network_name(NET)
    assert str(failure.value) == (f"cannot reach dockerd at {url} "
                                  "([Errno 2] No such file or directory)")


@pytest.mark.parametrize("negotiated", [False, True], ids=["probing", "version-known"])
def test_a_dockerd_that_never_answers_costs_one_timeout(dockerd, negotiated):
    """Like dockerd while it starts: the socket accepts, nothing answers."""
    api = DockerApi(dockerd.url, timeout=0.3)
    if negotiated:
        api.network_name(NET)
    dockerd.hang = True
    start = time.monotonic()
    with pytest.raises(DockerUnavailable) as failure:
        api.network_name(NET)
    assert time.monotonic() - start < 1.0
    assert str(failure.value) == (f"dockerd at {dockerd.url} did not answer within 0.3s "
                                  "(while dockerd starts it answers no API call)")
    assert api.endpoint_container(NET, EP) is None


def test_questions_share_a_connection_until_one_fails(dockerd):
    """Each thread keeps its client and connection; a failed question (here
    a timeout, as while dockerd starts) drops them, and the next question
    opens a new one."""
    api = DockerApi(dockerd.url, timeout=0.3)
    assert api.network_name(NET) == "net1"  # the version probe included
    opened = dockerd.connections
    for _ in range(4):
        assert api.network_name(NET) == "net1"
    assert dockerd.connections == opened
    dockerd.hang = True
    with pytest.raises(DockerUnavailable):
        api.network_name(NET)
    dockerd.hang = False
    assert api.network_name(NET) == "net1"
    assert dockerd.connections == opened + 1
