"""How many etcd round trips each endpoint call costs, through the HTTP face
and a real etcd (Join's netlink recorded, not made): in the steady state
(network named, profile made) CreateEndpoint writes the WorkloadEndpoint,
Join claims the sandbox in the same write, Leave needs etcd not at all, and
DeleteEndpoint deletes both in one transaction.  What changed behind this
process's back (a label edited, a restarted plugin) costs a retry, never a
wrong answer."""

import json

import pytest

from datastore.resources import Resources
from driver import dataplane
from driver import endpoints as ep
from driver.sandboxes import PREFIX as SANDBOXES
from tests.lab.common import wait_until
from tests.plugin.support import (CREATE_NETWORK, NET, NODE, NamedDocker, all_keys, call,
                                  endpoint, make_client)

WEPS = "/calico/resources/v3/projectcalico.org/workloadendpoints/"


def ids(endpoint_id):
    return {"NetworkID": NET, "EndpointID": endpoint_id}


def start(store):
    """A plugin process (its own caches) on the test's etcd."""
    return make_client(store, docker=NamedDocker(), label_poll_timeout=0.1)


@pytest.fixture
def plugin(store, no_netlink):
    """A plugin that knows its network's name and has made its profile."""
    client = start(store)
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    create(client, 0)
    return client


def create(client, n):
    body = {**ids(endpoint(n)), "Options": {},
            "Interface": {"Address": f"192.168.0.{n + 1}/32", "AddressIPv6": "",
                          "MacAddress": ""}}
    assert call(client, "NetworkDriver.CreateEndpoint", body)[0] == 200


def join_body(n, sandbox=None):
    return {**ids(endpoint(n)), "Options": {},
            "SandboxKey": f"/var/run/docker/netns/{sandbox if sandbox is not None else n:012x}"}


def relabel(store, n):
    """A change this plugin did not make (calicoctl label, another tool)."""
    def mutate(wep):
        wep.labels["tier"] = "db"
        return wep
    Resources(store).modify("WorkloadEndpoint", ep.wep_name(NODE, endpoint(n)), mutate,
                            namespace=ep.NAMESPACE)


def stored_wep(store, n):
    kv = store.get(WEPS + f"{ep.NAMESPACE}/{ep.wep_name(NODE, endpoint(n))}")
    return kv and json.loads(kv.value)


def leftovers(store, n):
    return {k for k in all_keys(store) if k.startswith(SANDBOXES) or endpoint(n) in k}


def test_steady_state_round_trips(plugin, store, round_trips):
    client = plugin
    body = {**ids(endpoint(1)), "Options": {},
            "Interface": {"Address": "192.168.0.2/32", "AddressIPv6": "", "MacAddress": ""}}
    assert round_trips(client, "NetworkDriver.CreateEndpoint", body)[::2] == (200, 1)
    status, answer, calls = round_trips(client, "NetworkDriver.Join", join_body(1))
    assert (status, calls) == (200, 1) and answer["Gateway"] == "169.254.1.1"
    assert stored_wep(store, 1)["metadata"]["annotations"][ep.SANDBOX_ANNOTATION] == \
        "/var/run/docker/netns/000000000001"
    assert round_trips(client, "NetworkDriver.Leave", ids(endpoint(1))) == (200, {}, 0)
    assert round_trips(client, "NetworkDriver.DeleteEndpoint", ids(endpoint(1))) == (200, {}, 1)
    assert leftovers(store, 1) == set()


def test_a_foreign_change_costs_one_retry(plugin, store, round_trips):
    client = plugin
    create(client, 1)
    relabel(store, 1)  # before Join: Join's write compares the old revision
    assert round_trips(client, "NetworkDriver.Join", join_body(1))[::2] == (200, 2)
    wep = stored_wep(store, 1)
    assert wep["metadata"]["labels"]["tier"] == "db"  # kept, with the sandbox
    assert wep["metadata"]["annotations"][ep.SANDBOX_ANNOTATION]
    relabel(store, 1)  # after Join: DeleteEndpoint's delete compares the old revision
    assert round_trips(client, "NetworkDriver.Leave", ids(endpoint(1)))[::2] == (200, 0)
    assert round_trips(client, "NetworkDriver.DeleteEndpoint", ids(endpoint(1)))[::2] == (200, 2)
    assert leftovers(store, 1) == set()


@pytest.mark.parametrize("relabelled, delete_calls", [(False, 1), (True, 2)])
def test_a_restarted_plugin_reads_once(plugin, store, round_trips, relabelled, delete_calls):
    """A plugin restarted between Join and Leave knows nothing of the
    endpoint: Leave reads it (for its routes), and DeleteEndpoint tries the
    WorkloadEndpoint's revision for the claim, which Join wrote with it."""
    create(plugin, 1)
    assert call(plugin, "NetworkDriver.Join", join_body(1))[0] == 200
    if relabelled:
        relabel(store, 1)
    restarted = start(store)
    assert round_trips(restarted, "NetworkDriver.Leave", ids(endpoint(1)))[::2] == (200, 1)
    assert round_trips(restarted, "NetworkDriver.DeleteEndpoint",
                       ids(endpoint(1)))[::2] == (200, delete_calls)
    assert leftovers(store, 1) == set()


def test_leave_then_join_again(plugin, store, round_trips):
    """dockerd joins an endpoint again after its Leave when a legacy link is
    removed (libnetwork's Sandbox.Refresh): the claim is its own still, and
    the connected route to the gateway, which dockerd keeps on the interface
    from the first Join, is not given twice (dockerd would fail: file exists)."""
    client = plugin
    create(client, 1)
    status, first = call(client, "NetworkDriver.Join", join_body(1))
    assert status == 200 and first["StaticRoutes"] == [
        {"Destination": "169.254.1.1/32", "RouteType": 1}]
    assert call(client, "NetworkDriver.Leave", ids(endpoint(1)))[0] == 200
    status, again, calls = round_trips(client, "NetworkDriver.Join", join_body(1))
    assert (status, calls) == (200, 2)
    assert again == {**first, "StaticRoutes": []}
    assert round_trips(client, "NetworkDriver.DeleteEndpoint", ids(endpoint(1)))[::2] == (200, 1)
    assert leftovers(store, 1) == set()


def test_one_calico_endpoint_per_sandbox(plugin, store, no_netlink, monkeypatch):
    removed = []
    monkeypatch.setattr(dataplane, "remove_veth", removed.append)
    client = plugin
    create(client, 1)
    create(client, 2)
    assert call(client, "NetworkDriver.Join", join_body(1))[0] == 200
    before = all_keys(store), store.revision()
    status, answer = call(client, "NetworkDriver.Join", join_body(2, sandbox=1))
    assert status == 500 and "only one Calico network" in answer["Err"]
    assert endpoint(1)[:12] in answer["Err"] and NET[:12] in answer["Err"]
    assert (all_keys(store), store.revision()) == before
    # Join made the veth while it claimed the sandbox: the refusal removes it.
    assert no_netlink[-1][0] == ep.host_ifname(endpoint(2))
    assert wait_until(lambda: removed == [ep.host_ifname(endpoint(2))], 10), removed
    # Once the holder is deleted behind the plugin's back, its claim is a
    # leftover that the next Join takes over.
    assert Resources(store).delete("WorkloadEndpoint", ep.wep_name(NODE, endpoint(1)),
                                   ep.NAMESPACE)
    assert call(client, "NetworkDriver.Join", join_body(2, sandbox=1))[0] == 200
    assert call(client, "NetworkDriver.DeleteEndpoint", ids(endpoint(1)))[0] == 200
    assert call(client, "NetworkDriver.DeleteEndpoint", ids(endpoint(2)))[0] == 200
    assert leftovers(store, 1) == leftovers(store, 2) == set()


def request_address(client):
    status, answer = call(client, "IpamDriver.RequestAddress",
                          {"PoolID": "CalicoPoolIPv4", "Address": "", "Options": {}})
    assert status == 200
    return answer["Address"]


def release_body(address):
    return {"PoolID": "CalicoPoolIPv4", "Address": address.split("/")[0]}


def test_request_and_release_address_are_one_round_trip_each(store, make_pool, pool_cache,
                                                              round_trips):
    """Once the node has a block and this process knows its endpoints."""
    make_pool("p", "192.168.0.0/16")
    plugin = make_client(store, pool_cache=pool_cache)
    assert wait_until(pool_cache.current, 10)
    request_address(plugin)
    assert call(plugin, "IpamDriver.ReleaseAddress", release_body(request_address(plugin)))[0] \
        == 200  # the first release reads this node's endpoints (driver/holders.py)
    status, answer, calls = round_trips(plugin, "IpamDriver.RequestAddress",
                                        {"PoolID": "CalicoPoolIPv4", "Address": "", "Options": {}})
    assert (status, calls) == (200, 1)
    assert round_trips(plugin, "IpamDriver.ReleaseAddress", release_body(answer["Address"])) \
        == (200, {}, 1)


@pytest.mark.parametrize("restarted", [False, True])
def test_an_endpoint_whose_delete_was_lost_goes_with_its_address(plugin, store, make_pool,
                                                                  restarted):
    """dockerd deletes an endpoint before releasing its address; a plugin
    killed during DeleteEndpoint gets dockerd's retry with an empty body,
    refuses it, and then hears ReleaseAddress: the endpoint goes then."""
    make_pool("p", "192.168.0.0/16")
    address = request_address(plugin)
    body = {**ids(endpoint(1)), "Options": {},
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""}}
    assert call(plugin, "NetworkDriver.CreateEndpoint", body)[0] == 200
    assert call(plugin, "NetworkDriver.Join", join_body(1))[0] == 200
    client = start(store) if restarted else plugin
    assert call(client, "NetworkDriver.DeleteEndpoint", raw=b"")[0] == 400  # the empty retry
    assert leftovers(store, 1)
    assert call(client, "IpamDriver.ReleaseAddress", release_body(address)) == (200, {})
    assert leftovers(store, 1) == set()
    assert address.split("/")[0] not in json.dumps(allocated(store))


def allocated(store):
    kvs, _ = store.get_prefix("/calico/ipam/v2/assignment/")
    return [json.loads(kv.value)["allocations"] for kv in kvs]
