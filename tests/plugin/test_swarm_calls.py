"""The calls a swarm node's dockerd makes for a swarm network from a
config-only one (reference/docker-swarm.md §3.3): every one answered, and
each safe to repeat, through the HTTP face and a real etcd.

A worker's dockerd creates such a network lazily, when its first task
lands: RequestPool in the local address space, then CreateNetwork with the
swarm network's 25-character id and Options that grew over the releases
(internal, enable_ipv4 from 28.0.1). The network is not persisted on the
node, so after a dockerd restart the same id comes again without a
DeleteNetwork in between.
"""

import hashlib
import json

from datastore.resources import Resources
from driver.networks import PREFIX as NETWORKS
from driver.settings import DriverSettings
from ipam.driver import ANY_POOL_ID
from plugin import services
from plugin.app import create_app
from tests.plugin.support import NamedDocker, call, endpoint, make_client

PROFILES = "/calico/resources/v3/projectcalico.org/profiles/"

SWARM_NET = "yev1q7lcn31qyxk10nhugr0ys"  # swarmkit's identity.NewID(): 25 base-36 characters
IPV4_DATA = [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "0.0.0.0/0",
              "Gateway": "0.0.0.0/0"}]
# What dockerd 28.5 sends for a swarm network from `--config-only --ipam-driver calico:latest`.
SWARM_OPTIONS = {"com.docker.network.enable_ipv4": True,
                 "com.docker.network.enable_ipv6": False,
                 "com.docker.network.internal": False,
                 "com.docker.network.generic": {}}


def test_create_network_with_a_swarm_id_is_idempotent(store):
    client = make_client(store, docker=NamedDocker())
    body = {"NetworkID": SWARM_NET, "Options": SWARM_OPTIONS, "IPv4Data": IPV4_DATA,
            "IPv6Data": []}
    for _ in range(3):  # dockerd restarted: the same id again, no DeleteNetwork between
        assert call(client, "NetworkDriver.CreateNetwork", body) == (200, {})
    records = store.get_prefix(NETWORKS)[0]
    assert [kv.key for kv in records] == [NETWORKS + SWARM_NET]
    assert json.loads(records[0].value)["options"] == {
        k: v for k, v in SWARM_OPTIONS.items() if k != "com.docker.network.generic"}
    for _ in range(2):
        assert call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": SWARM_NET}) == (200, {})
    assert store.get_prefix(NETWORKS)[0] == []


def test_request_pool_repeats_in_any_address_space(store):
    """A node-local network's pool is asked in the local address space
    (dockerd derives it from the scope), on every node, again after each
    restart: the same answer each time, and ReleasePool as often."""
    client = make_client(store)
    answers = []
    for space in ("CalicoLocalAddressSpace", "CalicoLocalAddressSpace", "LocalDefault",
                  "CalicoGlobalAddressSpace"):
        status, answer = call(client, "IpamDriver.RequestPool", {
            "AddressSpace": space, "Pool": "", "SubPool": "", "Options": {}, "V6": False})
        assert status == 200, answer
        answers.append(answer)
    assert all(a == answers[0] for a in answers)
    assert answers[0]["PoolID"] == ANY_POOL_ID[4]
    for _ in range(2):
        assert call(client, "IpamDriver.ReleasePool", {"PoolID": ANY_POOL_ID[4]}) == (200, {})


def test_swarm_managers_calls_are_answered(store):
    """AllocateNetwork/FreeNetwork (a manager's, for global-scope drivers
    only) and DiscoverNew/DiscoverDelete (gossip membership, sent to
    ConnectivityScope global drivers) need nothing from Calico."""
    client = make_client(store)
    allocate = {"NetworkID": SWARM_NET, "Options": {"com.docker.network.ipam.serial": "true"},
                "IPv4Data": [{"AddressSpace": "", "Pool": "10.0.9.0/24",
                              "Gateway": "10.0.9.1/24"}], "IPv6Data": None}
    for _ in range(2):
        assert call(client, "NetworkDriver.AllocateNetwork", allocate) == (200, {"Options": {}})
        assert call(client, "NetworkDriver.FreeNetwork", {"NetworkID": SWARM_NET}) == (200, {})
    for self_, address in ((True, "10.0.30.1"), (False, "10.0.30.2")):
        discovery = {"DiscoveryType": 1, "DiscoveryData": {
            "Address": address, "BindAddress": "10.0.30.1" if self_ else "", "Self": self_}}
        for path in ("NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete",
                     "NetworkDriver.DiscoverNew"):
            assert call(client, path, discovery) == (200, {})
    assert store.get_prefix("/calico/")[0] == []  # nothing written


def test_a_task_address_request_with_the_serial_option(store, make_pool):
    """The manager's `com.docker.network.ipam.serial` option, should a
    RequestAddress carry it, changes nothing."""
    make_pool("swarm-pool", "10.66.0.0/16")
    client = make_client(store)
    body = {"PoolID": ANY_POOL_ID[4], "Address": "",
            "Options": {"com.docker.network.ipam.serial": "true"}}
    status, answer = call(client, "IpamDriver.RequestAddress", body)
    assert status == 200, answer
    assert answer["Address"].startswith("10.66.") and answer["Address"].endswith("/32")


def test_a_swarm_network_without_config_from_says_what_to_run(store):
    """Without --config-from, swarm leaves a node-local driver's network to
    Docker's default IPAM on each node: refused, naming the commands."""
    client = make_client(store, docker=NamedDocker())
    status, answer = call(client, "NetworkDriver.CreateNetwork", {
        "NetworkID": SWARM_NET, "Options": SWARM_OPTIONS, "IPv6Data": [],
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.0.1.0/24",
                      "Gateway": "10.0.1.1/24"}]})
    assert status == 500
    assert "created without --config-from" in answer["Err"]
    assert "--config-only --ipam-driver calico:latest" in answer["Err"]
    assert store.get_prefix(NETWORKS)[0] == []


def node_client(store, node):
    settings = DriverSettings(nodename=node)
    return create_app(lambda: services.wire(settings, Resources(store), NamedDocker(),
                                            None)).test_client()


def create_endpoint(client, n):
    body = {"NetworkID": SWARM_NET, "EndpointID": endpoint(n), "Options": {},
            "Interface": {"Address": f"192.168.7.{n}/32", "AddressIPv6": "",
                          "MacAddress": ""}}
    assert call(client, "NetworkDriver.CreateEndpoint", body)[0] == 200


def delete_endpoint(client, n):
    body = {"NetworkID": SWARM_NET, "EndpointID": endpoint(n)}
    assert call(client, "NetworkDriver.DeleteEndpoint", body) == (200, {})


def test_a_swarm_networks_profile_lives_while_any_node_has_an_endpoint_on_it(store):
    """Every node's dockerd creates and deletes the same swarm network (one
    id, one record, one Profile): a node whose last task left deletes them
    only when no node has an endpoint on the network; a node that still
    believes the Profile exists writes it again with its next endpoint."""
    body = {"NetworkID": SWARM_NET, "Options": SWARM_OPTIONS, "IPv4Data": IPV4_DATA,
            "IPv6Data": []}
    a, b = node_client(store, "node-a"), node_client(store, "node-b")
    for client in (a, b):
        assert call(client, "NetworkDriver.CreateNetwork", body) == (200, {})
    for n, client in ((1, a), (2, b)):
        create_endpoint(client, n)
    profile = PROFILES + "web-net-" + hashlib.sha256(b"Web_Net").hexdigest()[:8]
    assert store.get(profile) is not None

    delete_endpoint(a, 1)
    assert call(a, "NetworkDriver.DeleteNetwork", {"NetworkID": SWARM_NET}) == (200, {})
    assert store.get(profile) is not None, "b's endpoint lost its profile"
    assert store.get(NETWORKS + SWARM_NET) is not None

    delete_endpoint(b, 2)  # b keeps the network (and believes the Profile exists) ...
    assert call(a, "NetworkDriver.DeleteNetwork", {"NetworkID": SWARM_NET}) == (200, {})
    assert store.get(profile) is None and store.get(NETWORKS + SWARM_NET) is None
    create_endpoint(b, 3)  # ... and its next endpoint brings the Profile back
    assert store.get(profile) is not None

    delete_endpoint(b, 3)
    assert call(b, "NetworkDriver.DeleteNetwork", {"NetworkID": SWARM_NET}) == (200, {})
    assert store.get_prefix("/calico/")[0] == []
