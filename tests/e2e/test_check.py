"""`calico-libnetwork check` on two lab hosts sharing one etcd: each fault
of issue 23 put in by hand, as a crash or a user's edit would leave it, then
found (naming the container), mended by --repair where that is provably safe
(or named with the command to run), and a second check clean.  One lab for
the module, the faults in sequence on h1; h2 holds the container that sees
h1's from another host."""

import json
import sys
import time
import types

import pytest

from driver import endpoints as ep
from tests.e2e.calico_host import (CALICO, PROFILE_PREFIX, REPO, WEP_PREFIX, calicoctl,
                                   container_ip, docker, endpoint_id, in_host, start_plugin,
                                   wait_for, wep)
from tests.lab import EtcdServer

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

ETCD_HOST = "10.0.12.1"
OLD = "2020-01-01T00:00:00Z"  # older than any grace


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    lab = docker_host_factory.lab
    h1, h2 = docker_host_factory(etcd=False), docker_host_factory(etcd=False)
    lab.veth(h1.netns, "eth1", h2.netns, "eth1", f"{ETCD_HOST}/24", "10.0.12.2/24")
    etcd = EtcdServer(host=ETCD_HOST, netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    h2.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, get=etcd.get, close=lambda: None)
    for host in (h1, h2):
        start_plugin(host, IP_AUTODETECTION_METHOD="interface=eth1",
                     CALICO_IPV4POOL_VXLAN="CrossSubnet")
        docker(host, "network", "create", *CALICO, "net1")
    for host, name in ((h1, "a1"), (h1, "a2"), (h2, "b1")):
        docker(host, "run", "-tid", "--net", "net1", "--name", name, "busybox")
    for host, name in ((h1, "a1"), (h1, "a2"), (h2, "b1")):
        wait_for(lambda: ep.DNS_NAMES_ANNOTATION in (wep(host, endpoint_id(
            host, name, "net1")) or {}).get("metadata", {}).get("annotations", {}), 20,
            f"{name}'s DNS names")
    return h1, h2


def check(host, *extra, **env):
    """(exit code, findings by kind, the JSON report) of `check -o json`."""
    result = calicoctl(host, "check", "--grace", "0", "-o", "json", *extra, check=False, **env)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    by_kind = {}
    for finding in report["findings"]:
        by_kind.setdefault(finding["kind"], []).append(finding)
    return result.returncode, by_kind, report


def repaired(host, kind):
    """The findings of `check --repair`: all of `kind`, all mended."""
    code, found, _ = check(host, "--repair")
    assert (code, list(found)) == (0, [kind]), found
    assert all(f["repaired"] for f in found[kind]), found
    return found[kind]


def clean(host):
    code, found, report = check(host)
    assert (code, found, report["unread"]) == (0, {}, {})


def python_in(host, code: str) -> str:
    """Run Python with the plugin's packages in the host, against etcd."""
    prelude = ("from datastore.etcd import Etcd; from ipam.allocator import Ipam; "
               f"etcd = Etcd([{host.etcd.endpoints!r}]); ")
    return host.run_in_netns(["env", f"PYTHONPATH={REPO}", sys.executable, "-c",
                              prelude + code]).stdout.strip()


def pings(host, container, target):
    return host.docker("exec", container, "ping", "-c", "2", "-W", "2", target).returncode == 0


def test_a_fresh_cluster_is_clean(hosts):
    for host in hosts:
        clean(host)


def test_a_deleted_host_veth_names_the_container_and_the_command(hosts):
    h1, _ = hosts
    in_host(h1, f"ip link del cali{endpoint_id(h1, 'a1', 'net1')[:11]}")
    code, found, _ = check(h1, "--repair")
    assert code == 1 and list(found) == ["interface-missing"]
    finding = found["interface-missing"][0]
    assert finding["container"] == "a1" and not finding["repaired"]
    assert "`docker restart a1`" in finding["advice"]
    text = calicoctl(h1, "check", "--grace", "0", check=False)
    assert text.returncode == 1
    assert [line for line in text.stdout.splitlines() if "a1" in line] == [
        f"container a1 has lost its interface {finding['message'].split()[-4]} on this host: "
        "run `docker restart a1` to give it a new one"]
    docker(h1, "restart", "a1")
    clean(h1)


def test_a_deleted_workload_endpoint_is_rewritten_from_dockerd(hosts):
    h1, h2 = hosts
    endpoint, address = endpoint_id(h1, "a2", "net1"), container_ip(h1, "a2", "net1")
    before = wep(h1, endpoint)
    h1.etcd.ctl("del", WEP_PREFIX + f"h1-libnetwork-libnetwork-{endpoint}")
    code, found, _ = check(h1)
    assert code == 1 and list(found) == ["endpoint-missing"]
    assert found["endpoint-missing"][0]["container"] == "a2"
    assert wep(h1, endpoint) is None  # check alone changes nothing
    code, found, _ = check(h1, "--repair")
    assert code == 0 and found["endpoint-missing"][0]["repaired"]
    after = wep(h1, endpoint)
    assert after["spec"]["ipNetworks"] == [f"{address}/32"]
    assert after["spec"]["profiles"] == before["spec"]["profiles"] == ["net1"]
    assert "a2" in json.loads(after["metadata"]["annotations"][ep.DNS_NAMES_ANNOTATION])
    assert after["metadata"]["annotations"][ep.SANDBOX_ANNOTATION] == \
        before["metadata"]["annotations"][ep.SANDBOX_ANNOTATION]
    clean(h1)
    wait_for(lambda: pings(h2, "b1", address), 20, "b1 on h2 to reach a2 again")


def test_a_missing_host_route_is_put_back(hosts):
    h1, _ = hosts
    address = container_ip(h1, "a2", "net1")
    in_host(h1, f"ip route del {address}/32")
    found = repaired(h1, "route-missing")
    assert found[0]["container"] == "a2"
    assert f"cali{endpoint_id(h1, 'a2', 'net1')[:11]}" in in_host(h1, f"ip route show {address}")
    clean(h1)


def test_a_cali_interface_no_endpoint_owns_is_deleted(hosts):
    h1, _ = hosts
    in_host(h1, "ip link add cali0123456789a type veth peer name temp0123456789a")
    repaired(h1, "interface-stray")
    assert "cali0123456789a" not in in_host(h1, "ip -o link show")
    clean(h1)


def test_a_ghost_endpoint_claiming_a_running_containers_address(hosts):
    h1, h2 = hosts
    address = container_ip(h1, "a2", "net1")
    ghost = wep(h1, endpoint_id(h1, "a2", "net1"))
    ghost_id = "fe" * 32
    # Written after the plugin started: its start-up sweep (driver/endpoint_sweep.py)
    # deletes only endpoints written before, and must not race the check here.
    ghost["metadata"].update(name=f"h1-libnetwork-libnetwork-{ghost_id}",
                             creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    ghost["spec"].update(endpoint=ghost_id, interfaceName=ep.host_ifname(ghost_id))
    h1.etcd.put(WEP_PREFIX + ghost["metadata"]["name"], json.dumps(ghost))
    found = repaired(h1, "endpoint-ghost")
    finding = found[0]
    assert f"{address} is running container a2's" in finding["message"]
    assert f"keeping {address}" in finding["repair"]
    assert wep(h1, ghost_id) is None and wep(h1, endpoint_id(h1, "a2", "net1")) is not None
    clean(h1)  # a2's address is still allocated: no endpoint lists an unallocated one
    assert pings(h2, "b1", address)


def test_a_leaked_address_is_released(hosts):
    h1, _ = hosts
    leaked = python_in(h1, "print(Ipam(etcd, 'h1').auto_assign(4, 'libnetwork.' + 'ab' * 16, "
                           f"{{'type': 'libnetwork', 'node': 'h1', 'timestamp': {OLD!r}}}))")
    found = repaired(h1, "address-leaked")
    assert leaked in found[0]["message"]
    assert python_in(h1, f"print(Ipam(etcd, 'h1').allocation({leaked!r}))") == "None"
    clean(h1)


def test_a_handle_count_that_disagrees_with_its_block_is_fixed(hosts):
    h1, _ = hosts
    address = container_ip(h1, "a2", "net1")
    python_in(h1, "import json; from ipam.blocks import handle_key, handle_value; "
                  f"h, _ = Ipam(etcd, 'h1').allocation({address!r}); "
                  "kv = etcd.get(handle_key(h)); "
                  "etcd.put(handle_key(h), json.dumps(handle_value("
                  "{b: n + 2 for b, n in json.loads(kv.value)['block'].items()})))")
    repaired(h1, "handle-count")
    clean(h1)


def test_a_block_affine_to_a_node_that_no_longer_exists(hosts):
    h1, _ = hosts
    python_in(h1, "Ipam(etcd, 'gone').auto_assign(4, 'libnetwork.' + 'cd' * 16, "
                  f"{{'type': 'libnetwork', 'node': 'gone', 'timestamp': {OLD!r}}})")
    found = repaired(h1, "affinity-orphan")
    assert "node gone, which no longer exists" in found[0]["message"]
    clean(h1)


def test_a_profile_named_after_a_network_id_no_network_uses(hosts):
    h1, _ = hosts
    old_id = "9a" * 32
    profile = ep.network_profile(old_id).to_dict()
    profile["metadata"]["creationTimestamp"] = OLD
    h1.etcd.put(PROFILE_PREFIX + old_id, json.dumps(profile))
    repaired(h1, "profile-unused")
    assert h1.etcd.get(PROFILE_PREFIX + old_id) is None
    clean(h1)


def test_without_dockerd_it_names_the_layer_and_compares_the_rest(hosts):
    h1, h2 = hosts
    in_host(h1, "ip link add cali0123456789b type veth peer name temp0123456789b")
    code, found, report = check(h1, "--repair", DOCKER_HOST="unix:///nonexistent.sock")
    assert code == 1 and list(report["unread"]) == ["dockerd"]
    # Without dockerd's word the interface may be a running container's: kept.
    assert not found["interface-stray"][0]["repaired"]
    assert "cali0123456789b" in in_host(h1, "ip -o link show")
    repaired(h1, "interface-stray")
    clean(h1)
    clean(h2)


def test_a_policy_set_element_deleted_by_hand_is_named(hosts):
    h1, _ = hosts
    address = container_ip(h1, "a2", "net1")
    name = python_in(h1, "from agent.policy.nft import PolicyTable; print(next(n for n, m in "
                         f"PolicyTable().sets().items() if {address!r} in m))")
    element = f"inet calico-libnetwork {name} {{ {address} }}"
    in_host(h1, f"nft delete element {element}")
    code, found, _ = check(h1, "--repair")
    assert code == 1 and list(found) == ["policy-set"]
    finding = found["policy-set"][0]
    assert f"lacks {address} (container a2)" in finding["message"]
    assert "restart the plugin" in finding["advice"] and not finding["repaired"]
    in_host(h1, f"nft add element {element}")
    clean(h1)
