"""Docker hosts without a default route (air-gapped sites; Calico issue
#3270): real dockerd, the plugin and its node agent, busybox containers.

    air1 eth1 10.0.31.1/24 ---- veth ---- air2 eth1 10.0.31.2/24
    lab0 10.1.0.1/24 (sink)               lab0 10.2.0.1/24 (sink)
    route 10.2.0.0/24 via 10.0.31.2       route 10.1.0.0/24 via 10.0.31.1

Neither host has a default route, so proxy ARP answers nothing there; the
containers' gateway 169.254.1.1 must be answered all the same.
"""

import types

import pytest
from netaddr import IPNetwork

from tests.e2e.calico_host import CALICO, container_ip, docker, start_plugin
from tests.lab import EtcdServer
from tests.lab.common import ip, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

LINK = {"air1": "10.0.31.1", "air2": "10.0.31.2"}


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    lab = docker_host_factory.lab
    air1, air2 = (docker_host_factory(f"air{index}", etcd=False, default_route=False)
                  for index in (1, 2))
    lab.veth(air1.netns, "eth1", air2.netns, "eth1",
             f"{LINK['air1']}/24", f"{LINK['air2']}/24")
    lab.route(air1.netns, "10.2.0.0/24", via=LINK["air2"])
    lab.route(air2.netns, "10.1.0.0/24", via=LINK["air1"])
    # air1 is closed last, so etcd outlives every host's containers.
    air1.etcd = EtcdServer(host=LINK["air1"], netns=air1.netns).start()
    air2.etcd = types.SimpleNamespace(endpoints=air1.etcd.endpoints, close=lambda: None)
    for host in (air1, air2):
        # The containers ping their gateway and hosts, which Felix's
        # default DefaultEndpointToHostAction (Drop) would refuse.
        start_plugin(host, IP=f"{LINK[host.name]}/24",
                     FELIX_DEFAULTENDPOINTTOHOSTACTION="Accept")
        docker(host, "network", "create", *CALICO, "net1")
    return air1, air2


def run(host, name):
    docker(host, "run", "-tid", "--net", "net1", "--name", name, "busybox")
    return container_ip(host, name, "net1")


def pings(host, container, target):
    return host.docker("exec", container, "ping", "-c", "2", "-W", "2", target).returncode == 0


def host_pings(host, target):
    return host.run_in_netns(["busybox", "ping", "-c", "2", "-W", "2", target],
                             check=False).returncode == 0


def test_one_host_without_default_route(hosts):
    air1, _ = hosts
    assert ip("route", "show", "default", netns=air1.netns).stdout.strip() == ""
    ip_a = run(air1, "workload-A")
    ip_b = run(air1, "workload-B")

    assert pings(air1, "workload-A", "169.254.1.1")
    assert pings(air1, "workload-A", LINK["air1"])  # its host
    assert pings(air1, "workload-A", air1.lab_address)
    assert pings(air1, "workload-A", ip_b) and pings(air1, "workload-B", ip_a)
    assert pings(air1, "workload-A", "workload-B") and pings(air1, "workload-B", "workload-A")
    assert host_pings(air1, ip_a)
    # Nothing but our veths changed: 169.254.1.1 is an address on each (the
    # kernel's local route for it names the veth), no route of the host's.
    gateway = [line for line in ip("route", "show", "table", "all", netns=air1.netns)
               .stdout.splitlines() if "169.254.1.1" in line]
    assert len(gateway) == 2 and all(" dev cali" in line for line in gateway), gateway


def test_two_hosts_without_default_routes(hosts):
    air1, air2 = hosts
    ip_a = container_ip(air1, "workload-A", "net1")
    ip_c = run(air2, "workload-C")
    block_a, block_c = IPNetwork(f"{ip_a}/26").cidr, IPNetwork(f"{ip_c}/26").cidr
    assert block_a != block_c
    for host, block, via in ((air1, block_c, LINK["air2"]), (air2, block_a, LINK["air1"])):
        assert wait_until(lambda: f"{block} via {via} dev eth1 proto 80" in
                          ip("route", "show", netns=host.netns).stdout, 15), \
            f"{host.name}'s route to {block}"

    # The agent admits a container of another host within a watch event.
    assert wait_until(lambda: pings(air1, "workload-A", ip_c), 20)
    assert pings(air2, "workload-C", ip_a)
    assert pings(air2, "workload-C", air1.lab_address)  # the other host
