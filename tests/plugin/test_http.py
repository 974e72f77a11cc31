"""The plugin's HTTP face through Flask's test client, against a real etcd:
routing, validation, error answers, and the NetworkDriver calls that need no
netlink (refusals, records written, nothing written on a refusal)."""

import hashlib
import json

import pytest

from plugin.app import MAX_BODY, MAX_ERR
from tests.plugin.support import EP, NET, NODE, NamedDocker, all_keys, call, make_client


@pytest.fixture
def client(store):
    return make_client(store)


def create_network_body(**overrides):
    body = {"NetworkID": NET,
            "Options": {"com.docker.network.enable_ipv6": False,
                        "com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "0.0.0.0/0",
                          "Gateway": "0.0.0.0/0", "AuxAddresses": {}}],
            "IPv6Data": []}
    body.update(overrides)
    return body


# -- transport and validation ---------------------------------------------

def test_activate_and_capabilities(client):
    assert call(client, "Plugin.Activate") == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    assert call(client, "NetworkDriver.GetCapabilities") == (
        200, {"Scope": "local", "ConnectivityScope": "global", "GwAllocChecker": True})
    status, body = call(client, "IpamDriver.GetDefaultAddressSpaces")
    assert status == 200
    assert body == {"LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
                    "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace"}


def test_unknown_call_is_a_json_404(client):
    status, body = call(client, "NetworkDriver.Frobnicate", {})
    assert status == 404 and "unknown plugin call" in body["Err"]


def test_get_is_refused_with_json(client):
    resp = client.get("/NetworkDriver.GetCapabilities")
    assert resp.status_code == 405 and "Err" in json.loads(resp.data)


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[" * 5000 + b"]" * 5000, "malformed JSON (nested too deeply)"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "malformed JSON (nested too deeply)"),
    (b'{"NetworkID": NaN}', "malformed JSON (NaN is not JSON)"),
    (b'{"Options": {"com.docker.network.enable_ipv6": Infinity}}', "Infinity is not JSON"),
    (b'{"Options": {"x": 1e999}}', "malformed JSON (1e999 is out of range)"),
    (b"[1, 2]", "must be a JSON object"),
    (b"", "NetworkID is required"),
    (json.dumps({"NetworkID": 7}).encode(), "NetworkID must be a Docker id"),
    (json.dumps({"NetworkID": "../../etc"}).encode(), "NetworkID must be a Docker id"),
    (json.dumps({"NetworkID": NET, "Options": []}).encode(), "Options must be an object"),
    (json.dumps({"NetworkID": NET, "IPv4Data": [{"Pool": "banana"}]}).encode(),
     "IPv4Data[0].Pool must be an address in CIDR form"),
])
def test_bad_requests_get_400_and_write_nothing(client, store, raw, message):
    status, body = call(client, "NetworkDriver.CreateNetwork", raw=raw)
    assert status == 400
    assert message in body["Err"]
    assert all_keys(store) == set()


def test_oversize_body_is_refused(client, store):
    status, body = call(client, "NetworkDriver.CreateNetwork", raw=b" " * (MAX_BODY + 1))
    assert status == 413 and "larger than" in body["Err"]
    status, body = call(client, "NetworkDriver.CreateNetwork", raw=b"x" * (8 * MAX_BODY))
    assert status == 413 and "larger than" in body["Err"]
    assert all_keys(store) == set()


@pytest.mark.parametrize("path, body", [
    ("NetworkDriver.CreateNetwork", create_network_body(Options={"x" * 100_000: True})),
    ("IpamDriver.RequestPool", {"Options": {"k" * 100_000: 1}}),
    ("IpamDriver.RequestPool", {"Pool": "\x00" * 4096}),
])
def test_an_err_quotes_a_hostile_value_briefly(client, store, path, body):
    status, answer = call(client, path, body)
    assert status in (400, 500)
    assert len(answer["Err"]) <= MAX_ERR and answer["Err"].endswith(" more characters)")
    assert all_keys(store) == set()


@pytest.mark.parametrize("path, body, message", [
    ("IpamDriver.RequestAddress", {"PoolID": 5}, "PoolID must be a string"),
    ("IpamDriver.RequestAddress", {"PoolID": "CalicoPoolIPv4", "Address": "10.0.0.300"},
     "Address must be an IP address"),
    ("IpamDriver.RequestPool", {"V6": "yes"}, "V6 must be true or false"),
    ("IpamDriver.RequestPool", {"Options": {"a": 1}}, "Options['a'] must be a string"),
    ("IpamDriver.ReleaseAddress", {"PoolID": "CalicoPoolIPv4"}, "Address is required"),
    ("NetworkDriver.CreateEndpoint",
     {"NetworkID": NET, "EndpointID": EP, "Interface": {"MacAddress": "zz"}},
     "Interface.MacAddress must be a MAC address"),
    ("NetworkDriver.Join", {"NetworkID": NET}, "EndpointID is required"),
])
def test_type_errors_name_the_field(client, store, path, body, message):
    status, answer = call(client, path, body)
    assert status == 400 and message in answer["Err"]
    assert all_keys(store) == set()


# -- CreateNetwork refusals (Calico's plugin test list, items 1, 4, 7, 8) ---

@pytest.mark.parametrize("overrides, message", [
    ({"IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "172.18.0.0/16",
                    "Gateway": "172.18.0.1/16"}]}, "Non-Calico IPAM driver is used"),
    ({"Options": {"com.docker.network.internal": True, "com.docker.network.generic": {}}},
     "Calico driver does not support the flag --internal."),
    ({"Options": {"com.docker.network.generic": {"REJECT": ""}}},
     "Calico driver does not support the flag REJECT."),
    ({"Options": {"com.docker.network.generic": {"REJECT": "", "REJECT2": ""}}},
     "Calico driver does not support the flags REJECT, REJECT2."),
    ({"IPv6Data": [{"AddressSpace": "LocalDefault", "Pool": "fd00::/64",
                    "Gateway": "fd00::1/64"}]}, "Non-Calico IPAM driver is used"),
    ({"IPv4Data": []}, "Calico networks need IPv4"),
])
def test_create_network_refusals(client, store, overrides, message):
    status, body = call(client, "NetworkDriver.CreateNetwork", create_network_body(**overrides))
    assert status == 500
    assert message in body["Err"]
    assert all_keys(store) == set()


def test_create_network_records_it_and_replays(client, store):
    assert call(client, "NetworkDriver.CreateNetwork", create_network_body()) == (200, {})
    assert call(client, "NetworkDriver.CreateNetwork", create_network_body()) == (200, {})
    record = json.loads(store.get(f"/calico/libnetwork/v1/networks/{NET}").value)
    assert record["node"] == NODE and record["ipv6"] is False
    assert call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == (200, {})
    assert call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == (200, {})
    assert all_keys(store) == set()


# -- CreateEndpoint / DeleteEndpoint ---------------------------------------

def endpoint_body(**interface):
    iface = {"Address": "192.168.7.3/32", "AddressIPv6": "", "MacAddress": ""}
    iface.update(interface)
    return {"NetworkID": NET, "EndpointID": EP, "Interface": iface, "Options": {}}


WEP_KEY = ("/calico/resources/v3/projectcalico.org/workloadendpoints/libnetwork/"
           f"test--node-libnetwork-libnetwork-{EP}")


def test_create_endpoint_writes_workload_endpoint_and_profile(store):
    client = make_client(store, docker=NamedDocker())
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    status, body = call(client, "NetworkDriver.CreateEndpoint",
                        endpoint_body(AddressIPv6="fd00::5/128"))
    assert (status, body) == (200, {"Interface": {"MacAddress": "ee:ee:ee:ee:ee:ee"}})
    wep = json.loads(store.get(WEP_KEY).value)
    assert wep["kind"] == "WorkloadEndpoint" and wep["apiVersion"] == "projectcalico.org/v3"
    meta = wep["metadata"]
    assert meta["namespace"] == "libnetwork" and meta["uid"] and meta["creationTimestamp"]
    assert "resourceVersion" not in meta
    assert meta["labels"] == {"projectcalico.org/namespace": "libnetwork",
                              "projectcalico.org/orchestrator": "libnetwork"}
    profile = "web-net-" + hashlib.sha256(b"Web_Net").hexdigest()[:8]
    assert wep["spec"] == {
        "orchestrator": "libnetwork", "workload": "libnetwork", "node": NODE,
        "endpoint": EP, "ipNetworks": ["192.168.7.3/32", "fd00::5/128"],
        "profiles": [profile], "interfaceName": "calib1c2d3e4f5a", "mac": "ee:ee:ee:ee:ee:ee"}
    prof = json.loads(store.get(f"/calico/resources/v3/projectcalico.org/profiles/{profile}").value)
    assert prof["spec"]["labelsToApply"] == {profile: ""}
    assert prof["spec"]["ingress"][0] == {"action": "Allow",
                                          "source": {"selector": f"has({profile})"},
                                          "destination": {}}
    assert prof["spec"]["egress"][0]["action"] == "Allow"
    # Replay: same answer, same record.
    assert call(client, "NetworkDriver.CreateEndpoint",
                endpoint_body(AddressIPv6="fd00::5/128"))[0] == 200
    assert json.loads(store.get(WEP_KEY).value)["spec"] == wep["spec"]
    # Delete twice; the profile goes with the last network of that name.
    assert call(client, "NetworkDriver.DeleteEndpoint",
                {"NetworkID": NET, "EndpointID": EP}) == (200, {})
    assert call(client, "NetworkDriver.DeleteEndpoint",
                {"NetworkID": NET, "EndpointID": EP}) == (200, {})
    assert store.get(WEP_KEY) is None
    call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NET})
    assert all_keys(store) == set()


def test_user_mac_is_kept_and_not_returned(store):
    client = make_client(store, docker=NamedDocker())
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    status, body = call(client, "NetworkDriver.CreateEndpoint",
                        endpoint_body(MacAddress="00:22:33:44:55:66"))
    assert (status, body) == (200, {})
    assert json.loads(store.get(WEP_KEY).value)["spec"]["mac"] == "00:22:33:44:55:66"


def test_profiles_can_be_disabled(store):
    client = make_client(store, create_profiles=False)
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    assert call(client, "NetworkDriver.CreateEndpoint", endpoint_body())[0] == 200
    assert json.loads(store.get(WEP_KEY).value)["spec"]["profiles"] == []
    assert not [k for k in all_keys(store) if "/profiles/" in k]


def test_endpoint_without_address_is_refused(client, store):
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    status, body = call(client, "NetworkDriver.CreateEndpoint", endpoint_body(Address=""))
    assert status == 500 and "No address assigned for endpoint" in body["Err"]
    assert store.get(WEP_KEY) is None


def test_endpoint_on_a_network_never_seen_still_works(store):
    client = make_client(store, docker=NamedDocker())
    assert call(client, "NetworkDriver.CreateEndpoint", endpoint_body())[0] == 200
    assert store.get(WEP_KEY) is not None
    assert store.get(f"/calico/libnetwork/v1/networks/{NET}") is not None


def test_join_of_unknown_endpoint_is_refused(client, store):
    status, body = call(client, "NetworkDriver.Join",
                        {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x", "Options": {}})
    assert status == 500 and "unknown to Calico" in body["Err"]
    assert all_keys(store) == set()


def test_leave_and_delete_of_unknown_endpoint_succeed(client, store):
    ids = {"NetworkID": NET, "EndpointID": EP}
    assert call(client, "NetworkDriver.Leave", ids) == (200, {})
    assert call(client, "NetworkDriver.DeleteEndpoint", ids) == (200, {})


def test_no_op_calls_answer_json(client):
    ids = {"NetworkID": NET, "EndpointID": EP}
    assert call(client, "NetworkDriver.EndpointOperInfo", ids) == (200, {"Value": {}})
    assert call(client, "NetworkDriver.ProgramExternalConnectivity",
                dict(ids, Options={})) == (200, {})
    assert call(client, "NetworkDriver.RevokeExternalConnectivity", ids) == (200, {})
    assert call(client, "NetworkDriver.DiscoverNew",
                {"DiscoveryType": 1,
                 "DiscoveryData": {"Address": "10.0.0.1", "Self": True}}) == (200, {})
    assert call(client, "NetworkDriver.DiscoverDelete", {"DiscoveryType": 1}) == (200, {})
    assert call(client, "NetworkDriver.FreeNetwork", {"NetworkID": NET}) == (200, {})


def test_datastore_down_is_a_clear_error(client, store, etcd_clean):
    etcd_clean.kill()
    try:
        status, body = call(client, "NetworkDriver.CreateNetwork", create_network_body())
        assert status == 500 and "cannot reach etcd at" in body["Err"]
    finally:
        etcd_clean.restart()
    assert all_keys(store) == set()
