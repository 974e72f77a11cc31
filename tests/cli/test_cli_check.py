"""`check` against a real etcd, with dockerd unreachable (a socket nobody
serves): the IPAM, Node and Profile comparisons find and mend their faults,
the layer it could not read is named, and an etcd outage is a message, not
a traceback.  (The dockerd and kernel faults: tests/e2e/test_check.py.)"""

import json
import os

import pytest
from netaddr import IPNetwork

from datastore.resources import Resource
from driver import endpoints as ep
from driver.networks import Network, Networks
from ipam.allocator import Ipam
from ipam.blocks import affinity_prefix, handle_key, handle_value
from tests.cli.conftest import NODE
from tests.fake_dockerd import DOCKER_26, FakeDockerd


@pytest.fixture
def check(cli, monkeypatch, tmp_path, resources):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    # No policy table to compare in the namespace pytest runs in (tests/e2e do it).
    monkeypatch.setenv("CALICO_LIBNETWORK_POLICY", "false")
    resources.create(Resource(kind="Node", name=NODE, spec={}))
    return lambda *extra: cli("check", "--grace", "0", "-o", "json", *extra)


def kinds(result):
    return sorted((f["kind"], f["repaired"]) for f in result.json()["findings"])


def test_without_dockerd_it_says_so_and_compares_the_rest(check, cli):
    result = check()
    assert result.code == 1
    assert "dockerd" in result.json()["unread"] and result.json()["findings"] == []
    text = cli("check")
    assert text.code == 1 and "could not read dockerd" in text.out
    assert "the layers read agree" in text.out


def test_a_handle_count_that_disagrees_with_its_block_is_rewritten(check, etcd_client,
                                                                     make_pool):
    make_pool("pool", "10.80.0.0/24")
    ip = Ipam(etcd_client, NODE).auto_assign(4, "libnetwork.a", {"type": "libnetwork"})
    block = str(IPNetwork(f"{ip}/26").cidr)
    etcd_client.put(handle_key("libnetwork.a"), json.dumps(handle_value({block: 3})))
    etcd_client.put(handle_key("libnetwork.none"), json.dumps(handle_value({block: 1})))
    found = check()
    assert kinds(found) == [("handle-count", False), ("handle-count", False)]
    assert "3 addresses" in found.json()["findings"][0]["message"]
    assert kinds(check("--repair")) == [("handle-count", True), ("handle-count", True)]
    assert check().json()["findings"] == []
    assert json.loads(etcd_client.get(handle_key("libnetwork.a")).value)["block"] == {block: 1}
    assert etcd_client.get(handle_key("libnetwork.none")) is None


def test_a_block_of_a_node_that_no_longer_exists_loses_its_affinity(check, etcd_client,
                                                                     make_pool):
    make_pool("pool", "10.80.0.0/24")
    ip = Ipam(etcd_client, "gone").auto_assign(4, "libnetwork.g", {"type": "libnetwork"})
    found = check()
    assert kinds(found) == [("affinity-orphan", False)]
    assert "node gone, which no longer exists" in found.json()["findings"][0]["message"]
    assert kinds(check("--repair")) == [("affinity-orphan", True)]
    assert check().json()["findings"] == []
    assert etcd_client.get_prefix(affinity_prefix("gone"))[0] == []
    # Its address stays allocated: only the claim on the block went.
    assert Ipam(etcd_client, NODE).allocation(ip)[0] == "libnetwork.g"


def test_only_our_profiles_no_network_uses_are_deleted(check, resources, etcd_client):
    network_id = "ab" * 32
    for name in (network_id, "net1", "kept-by-endpoint", "still-a-network"):
        resources.create(ep.network_profile(name))
    users = ep.network_profile("users")
    users.spec["egress"] = []
    resources.create(users)  # a Profile a user wrote: never ours to delete
    Networks(etcd_client).add(Network("cd" * 32, "other", name="still-a-network"))
    wep = ep.workload_endpoint("other", "ef" * 32, "cd" * 32, ["10.80.0.9/32"], ep.DEFAULT_MAC,
                               ["kept-by-endpoint"])
    resources.create(wep)
    found = check()
    assert sorted(f["message"] for f in found.json()["findings"]) == [
        f"Profile {network_id} belongs to no network any more",
        "Profile net1 belongs to no network any more"]
    check("--repair")
    assert sorted(p.name for p in resources.list("Profile")) == [
        "kept-by-endpoint", "still-a-network", "users"]
    assert check().json()["findings"] == []


def test_node_record_missing_is_named_with_what_to_run(check, resources):
    resources.delete("Node", NODE)
    found = check("--repair").json()["findings"]
    assert [(f["kind"], f["repaired"]) for f in found] == [("node-missing", False)]
    assert "calico-libnetwork run" in found[0]["advice"]


def test_etcd_down_is_named_and_the_rest_compared(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://127.0.0.1:1")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    result = cli("check")
    assert result.code == 1
    assert "could not read etcd" in result.out and "could not read dockerd" in result.out
    assert "Traceback" not in result.err


def test_a_ghost_endpoint_is_found_while_dockerd_answers(cli, monkeypatch, resources):
    with FakeDockerd(DOCKER_26) as dockerd:
        dockerd.networks["cd" * 32] = "net1"
        monkeypatch.setenv("DOCKER_HOST", dockerd.url)
        monkeypatch.setenv("CALICO_LIBNETWORK_POLICY", "false")
        resources.create(Resource(kind="Node", name=NODE, spec={}))
        ghost = ep.workload_endpoint(NODE, "fe" * 32, "cd" * 32, ["10.80.0.9/32"],
                                     ep.DEFAULT_MAC, [])
        ghost.metadata["creationTimestamp"] = "2020-01-01T00:00:00Z"
        resources.create(ghost)
        result = cli("check", "--grace", "0", "-o", "json")
    assert [f["kind"] for f in result.json()["findings"]][:1] == ["endpoint-ghost"], result


def test_a_names_responder_that_does_not_answer_is_reported(check, monkeypatch, tmp_path):
    """The watchdog's file says the responder stopped answering (its
    watchdog, here this process, alive): check names it; once it answers
    again, nothing."""
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))
    health = tmp_path / f"names-health-{NODE}.json"
    health.write_text(json.dumps({"answering": False, "since": 1, "intercepted": [],
                                  "withdrawals": 1, "pid": os.getpid()}))
    assert kinds(check()) == [("responder-not-answering", False)]
    health.write_text(json.dumps({"answering": True, "since": 1, "intercepted": ["10.0.0.2"],
                                  "withdrawals": 1, "pid": os.getpid()}))
    assert check().json()["findings"] == []
