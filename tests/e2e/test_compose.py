"""Docker Compose v2 with the plugin's drivers, on one lab Docker host: the
Compose that Debian 13 ships (a CLI plugin; tests/lab/dockerd.py COMPOSE),
against whichever dockerd the lab runs (20.10, or LAB_DOCKER=26).

A project whose networks say `driver: calico` and `ipam: {driver:
calico-ipam}` comes up, its services reach each other by name (and not
those of the other network), and `docker compose down` leaves nothing
behind: no network, workload endpoint, address, veth or route. The same
with an `external: true` network made beforehand with `docker network
create`, which `down` must leave in place.
"""

import json

import pytest
from netaddr import IPAddress, IPNetwork

from driver.endpoints import profile_name
from tests.e2e.calico_host import (CALICO, IPV4_POOL, PROFILE_PREFIX, WEP_PREFIX, Project,
                                   calicoctl, container_ip, docker, endpoint_id, in_host,
                                   keys, remove_all, start_plugin, wait_for, wep)
from tests.lab.dockerd import COMPOSE

pytestmark = [pytest.mark.slow, pytest.mark.require_root]


# The lab's busybox image is local (there is no registry): never pull it.
# busybox's sh would exit without a terminal; sleep keeps the services up.
SERVICES = """\
services:
  a:
    image: busybox:latest
    pull_policy: never
    command: ["sleep", "3600"]
    networks: [{network}]
  b:
    image: busybox:latest
    pull_policy: never
    command: ["sleep", "3600"]
    networks: [{network}]
"""

CALICO_NETWORKS = SERVICES.format(network="front") + """\
  c:
    image: busybox:latest
    pull_policy: never
    command: ["sleep", "3600"]
    networks: [back]
  d:
    image: busybox:latest
    pull_policy: never
    command: ["sleep", "3600"]
    networks: [back]
networks:
  front:
    driver: calico
    ipam:
      driver: calico-ipam
  back:
    driver: calico
    ipam:
      driver: calico-ipam
"""

EXTERNAL_NETWORK = SERVICES.format(network="shared") + """\
networks:
  shared:
    external: true
    name: compose-ext
"""


@pytest.fixture(scope="module")
def host(docker_host):
    if COMPOSE is None:
        pytest.skip("no Compose v2 (bash scripts/docker-versions.sh 26 fetches Debian 13's)")
    docker_host.plugin = start_plugin(docker_host)
    yield docker_host
    remove_all(docker_host)


@pytest.fixture
def project(host):
    made = []

    def make(name, text):
        made.append(Project(host, name, text))
        return made[-1]

    yield make
    for p in made:
        p.compose("down", "--timeout", "1", check=False)
    remove_all(host)


def ping_by_name(p, source, target):
    return p.compose("exec", "-T", source, "ping", "-c", "1", "-W", "2", target, check=False)


def in_use(host):
    """Addresses Calico IPAM holds (`calico-libnetwork ipam show -o json`)."""
    report = json.loads(calicoctl(host, "ipam", "show", "-o", "json").stdout)
    return sum(pool["inUse"] for pool in report["pools"])


def cali_links(host):
    return [line.split()[0].split("@")[0]
            for line in in_host(host, ["ip", "-br", "link"]).splitlines()
            if line.startswith("cali")]


def cali_routes(host):
    return [line for line in in_host(host, ["ip", "route"]).splitlines() if " dev cali" in line]


def assert_nothing_left(host):
    assert keys(host, WEP_PREFIX) == []
    assert keys(host, "/calico/ipam/v2/handle/") == []
    assert keys(host, "/calico/libnetwork/v1/sandboxes/") == []
    assert in_use(host) == 0
    assert cali_links(host) == []
    assert cali_routes(host) == []


def test_compose_project_on_calico_networks(project):
    p = project("calico-app", CALICO_NETWORKS)
    host = p.host
    p.compose("up", "--detach")
    network = f"{p.name}_front"  # Compose names it <project>_<network>
    profile = profile_name(network)  # '_' is not allowed in Calico names
    assert docker(host, "network", "inspect", "-f", "{{.Driver}} {{.IPAM.Driver}}",
                  network) == "calico calico-ipam"

    # The services reach each other by their names (dockerd's DNS).
    ping = ping_by_name(p, "a", "b")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    ping = ping_by_name(p, "b", "a")
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # Each service is a Calico workload on the project's network.
    endpoints = []
    for service in ("a", "b"):
        container = p.container(service)
        address = container_ip(host, container, network)
        assert IPAddress(address) in IPNetwork(IPV4_POOL), address
        endpoint = endpoint_id(host, container, network)
        record = wep(host, endpoint)
        assert record["spec"]["ipNetworks"] == [f"{address}/32"]
        assert record["spec"]["profiles"] == [profile]
        endpoints.append(endpoint)
    assert keys(host, PROFILE_PREFIX + profile) != []

    # c, on the project's other network, reaches d there and is kept apart
    # from a and b.
    def c_pings(address):
        return p.compose("exec", "-T", "c", "ping", "-c", "1", "-W", "1", address,
                         check=False).returncode == 0

    d_address = container_ip(host, p.container("d"), f"{p.name}_back")
    wait_for(lambda: c_pings(d_address), 10, "c to reach d")
    assert not c_pings(container_ip(host, p.container("a"), network))
    assert in_use(host) == 4
    assert len(cali_links(host)) == 4 and len(cali_routes(host)) == 4

    p.compose("down", "--timeout", "1")
    for name in (network, f"{p.name}_back"):
        assert host.docker("network", "inspect", name).returncode != 0
    assert_nothing_left(host)
    assert all(wep(host, endpoint) is None for endpoint in endpoints)
    assert keys(host, PROFILE_PREFIX + profile) == []
    assert keys(host, "/calico/libnetwork/v1/networks/") == []


def test_compose_project_on_an_external_calico_network(project, host):
    docker(host, "network", "create", *CALICO, "compose-ext")
    p = project("ext-app", EXTERNAL_NETWORK)
    p.compose("up", "--detach")
    ping = ping_by_name(p, "a", "b")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    record = wep(host, endpoint_id(host, p.container("a"), "compose-ext"))
    assert record["spec"]["profiles"] == ["compose-ext"]
    assert in_use(host) == 2

    p.compose("down", "--timeout", "1")
    # The network is not the project's: it stays, with its profile; the
    # services' endpoints, addresses, veths and routes go.
    assert docker(host, "network", "inspect", "-f", "{{.Driver}}", "compose-ext") == "calico"
    assert keys(host, PROFILE_PREFIX + "compose-ext") != []
    assert_nothing_left(host)

    docker(host, "network", "rm", "compose-ext")
    assert keys(host, PROFILE_PREFIX + "compose-ext") == []
    assert keys(host, "/calico/libnetwork/v1/networks/") == []
