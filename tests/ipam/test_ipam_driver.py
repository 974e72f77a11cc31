"""The IpamDriver protocol logic: Docker's field names, Calico's refusals."""

import re

import pytest
from netaddr import IPNetwork

from ipam.driver import IpamDriver
from ipam.errors import AddressInUse, AddressNotInPool, InvalidRequest, PoolNotFound
from tests.ipam.support import allocations, assert_consistent, set_disabled


@pytest.fixture
def driver(resources, node_ipam):
    return IpamDriver(node_ipam("host1"), "host1", resources)


def test_capabilities_and_address_spaces(driver):
    assert driver.get_capabilities() == {"RequiresMACAddress": False,
                                         "RequiresRequestReplay": False}
    assert driver.get_default_address_spaces() == {
        "LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
        "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace"}


def test_request_pool_without_subnet(driver):
    assert driver.request_pool("CalicoLocalAddressSpace", "", "", None, False) == {
        "PoolID": "CalicoPoolIPv4", "Pool": "0.0.0.0/0",
        "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    assert driver.request_pool("CalicoGlobalAddressSpace", "", "", {}, True) == {
        "PoolID": "CalicoPoolIPv6", "Pool": "::/0",
        "Data": {"com.docker.network.gateway": "::/0"}}
    assert driver.release_pool("CalicoPoolIPv4") == {}


def test_request_pool_with_subnet(driver, make_pool, resources):
    make_pool("net1", "10.0.0.0/16")
    make_pool("net6", "fd00::/64")
    assert driver.request_pool("", "10.0.0.0/16", "", None, False) == {
        "PoolID": "net1", "Pool": "10.0.0.0/16",
        "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
    assert driver.request_pool("", "fd00::/64", "", None, True)["PoolID"] == "net6"
    with pytest.raises(PoolNotFound) as error:
        driver.request_pool("", "10.0.0.0/24", "", None, False)
    assert str(error.value) == (
        "The requested subnet must match the CIDR of a configured Calico IP Pool. No pool "
        "has CIDR 10.0.0.0/24; IPv4 pools: net1 (10.0.0.0/16). Use one of those CIDRs or "
        "create a pool first, e.g. `calico-libnetwork pool create 10.0.0.0/24`")
    with pytest.raises(InvalidRequest, match="Invalid CIDR '10.0.0/33'"):
        driver.request_pool("", "10.0.0/33", "", None, False)
    with pytest.raises(InvalidRequest, match="not an IPv6 subnet"):
        driver.request_pool("", "10.0.0.0/16", "", None, True)
    set_disabled(resources, "net1")
    with pytest.raises(PoolNotFound, match="is disabled; enable it"):
        driver.request_pool("", "10.0.0.0/16", "", None, False)


def test_request_pool_refusals(driver):
    with pytest.raises(InvalidRequest) as error:
        driver.request_pool("", "10.0.0.0/16", "10.0.1.0/24", None, False)
    assert str(error.value) == (
        "Calico IPAM does not support sub pool configuration on 'docker create network'. "
        "Calico IP Pools should be configured first and IP assignment is from those "
        "pre-configured pools.")
    with pytest.raises(InvalidRequest, match="^Arbitrary options are not supported$"):
        driver.request_pool("", "", "", {"foo": "bar"}, False)


def test_request_address_auto_assigns_with_a_handle_and_attributes(driver, make_pool,
                                                                   etcd_client, node_ipam):
    make_pool("net1", "10.0.0.0/24", block_size=28)
    make_pool("net6", "fd00::/120", block_size=124)
    reply = driver.request_address("CalicoPoolIPv4", "",
                                   {"com.docker.network.endpoint.name": "web"})
    assert re.fullmatch(r"10\.0\.0\.\d+/32", reply["Address"]) and reply["Data"] == {}
    ip = reply["Address"].split("/")[0]
    handle_id, attrs = node_ipam("host1").allocation(ip)
    assert re.fullmatch(r"libnetwork\.[0-9a-f]{32}", handle_id)
    assert attrs.pop("timestamp").endswith("Z")
    assert attrs == {"node": "host1", "type": "libnetwork", "network-pool": "CalicoPoolIPv4",
                     "endpoint-name": "web"}
    v6 = driver.request_address("net6", "", None)["Address"]
    assert v6.endswith("/128") and IPNetwork(v6).ip in IPNetwork("fd00::/120")
    other = driver.request_address("net1", "", None)["Address"]
    assert allocations(etcd_client)[other.split("/")[0]] != handle_id  # one handle each
    assert_consistent(etcd_client)


def test_request_a_given_address(driver, make_pool):
    make_pool("net1", "10.0.0.0/24", block_size=28)
    make_pool("net2", "10.1.0.0/24", block_size=28)
    assert driver.request_address("net1", "10.0.0.77", None) == {
        "Address": "10.0.0.77/32", "Data": {}}
    with pytest.raises(AddressInUse, match="10.0.0.77 is already in use"):
        driver.request_address("net1", "10.0.0.77", None)
    with pytest.raises(AddressNotInPool, match=r"10.1.0.5 is not in Calico IP pool net1 "
                                               r"\(10.0.0.0/24\), which this network uses"):
        driver.request_address("net1", "10.1.0.5", None)
    with pytest.raises(AddressNotInPool, match="not in any Calico IP pool"):
        driver.request_address("CalicoPoolIPv4", "10.9.0.5", None)
    with pytest.raises(InvalidRequest, match="not an IPv4 address"):
        driver.request_address("CalicoPoolIPv4", "fd00::1", None)
    with pytest.raises(InvalidRequest, match="'10.0.0.300' is not an IP address"):
        driver.request_address("net1", "10.0.0.300", None)


def test_request_address_refusals(driver, make_pool, resources):
    make_pool("net1", "10.0.0.0/24", block_size=28)
    with pytest.raises(InvalidRequest, match=r"^Calico IPAM does not support specifying a "
                                             r"gateway\.$"):
        driver.request_address("net1", "10.0.0.1",
                               {"RequestAddressType": "com.docker.network.gateway"})
    with pytest.raises(PoolNotFound) as error:
        driver.request_address("gone", "", None)
    assert str(error.value) == (
        "The network references a Calico pool which has been deleted. Please re-instate "
        "the Calico pool before using the network. (pool 'gone')")
    set_disabled(resources, "net1")
    with pytest.raises(PoolNotFound, match="is disabled"):
        driver.request_address("net1", "", None)


def test_release_address_is_idempotent(driver, make_pool, etcd_client):
    make_pool("net1", "10.0.0.0/24", block_size=28)
    address = driver.request_address("net1", "", None)["Address"].split("/")[0]
    assert driver.release_address("net1", address) == {}
    assert driver.release_address("net1", address) == {}
    assert driver.release_address("CalicoPoolIPv4", "10.200.0.1") == {}
    assert allocations(etcd_client) == {}
    with pytest.raises(InvalidRequest, match="needs an Address"):
        driver.release_address("net1", "")
    assert_consistent(etcd_client)
