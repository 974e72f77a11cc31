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

import json

from driver.networks import PREFIX as NETWORKS
from ipam.driver import ANY_POOL_ID
from tests.plugin.support import NamedDocker, call, make_client

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
