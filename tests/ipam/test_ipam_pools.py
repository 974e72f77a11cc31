"""IP pools against a real etcd: records as calicoctl writes them, validation,
create side effects, delete semantics, nodeSelectors."""

import json
from dataclasses import replace

import pytest

from datastore.errors import ResourceConflict
from datastore.resources import Resource, resource_key
from ipam.blocks import affinity_key
from ipam.errors import InvalidPool, PoolInUse, PoolNotFound
from ipam.pools import (build_pool, create_pool, delete_pool, find_pool_by_cidr, get_pool,
                        list_pools, node_labels, update_pool)
from ipam.store import BlockStore
from tests.ipam.support import allocations, assert_consistent, enabled_pools

# calico-datastore.md §2.1, byte for byte: as libcalico-go v3.17 stores a pool ...
CALICOCTL_POOL = (
    '{"kind":"IPPool","apiVersion":"projectcalico.org/v3",'
    '"metadata":{"name":"net1","uid":"431f5c3e-68b6-11e8-8f6c-08002749ff23",'
    '"creationTimestamp":"2018-06-05T11:47:45Z",'
    '"annotations":{"org.projectcalico.label.network.ID":"<docker-network-id>"}},'
    '"spec":{"cidr":"192.168.10.0/24","vxlanMode":"Never","ipipMode":"Always",'
    '"natOutgoing":true,"blockSize":26,"nodeSelector":"all()"}}')
# ... and as libnetwork-plugin's test helper writes one (no blockSize/nodeSelector).
MINIMAL_POOL = (
    '{"kind":"IPPool","apiVersion":"projectcalico.org/v3","metadata":{"name":"%s",'
    '"creationTimestamp":"2018-06-05T11:47:45Z","uid":"431f5c3e-68b6-11e8-8f6c-08002749ff23"},'
    '"spec":{"cidr":"%s","ipipMode":"Never","natOutgoing":true}}')


def pool_key(name):
    return resource_key("IPPool", name)


def test_calicoctl_pool_reads_and_round_trips_byte_for_byte(etcd_client, resources):
    etcd_client.put(pool_key("net1"), CALICOCTL_POOL)
    pool = get_pool(resources, "net1")
    assert (str(pool.cidr), pool.block_size, pool.ipip_mode, pool.vxlan_mode,
            pool.nat_outgoing, pool.disabled, pool.node_selector) == \
        ("192.168.10.0/24", 26, "Always", "Never", True, False, "all()")
    assert pool.to_resource().to_json() == CALICOCTL_POOL


def test_minimal_pool_gets_defaults_on_read(etcd_client, resources):
    etcd_client.put(pool_key("p4"), MINIMAL_POOL % ("p4", "192.169.0.0/16"))
    etcd_client.put(pool_key("p6"), MINIMAL_POOL % ("p6", "2001:db8::/32"))
    p4, p6 = list_pools(resources)
    assert (p4.block_size, p4.node_selector, p4.vxlan_mode) == (26, "all()", "Never")
    assert (p6.block_size, p6.version) == (122, 6)
    assert [p.name for p in enabled_pools(resources, 6)] == ["p6"]


def test_created_pool_is_stored_as_calicoctl_stores_it(etcd_client, resources):
    create_pool(resources, build_pool("net2", "10.1.2.3/16", nat_outgoing=True))
    stored = json.loads(etcd_client.get(pool_key("net2")).value)
    assert list(stored) == ["kind", "apiVersion", "metadata", "spec"]
    assert set(stored["metadata"]) == {"name", "uid", "creationTimestamp"}
    raw = etcd_client.get(pool_key("net2")).value.decode()
    assert raw.endswith('"spec":{"cidr":"10.1.0.0/16","vxlanMode":"Never","ipipMode":"Never",'
                       '"natOutgoing":true,"blockSize":26,"nodeSelector":"all()"}}')


@pytest.mark.parametrize("name, cidr, options, words", [
    ("Bad_Name", "10.0.0.0/16", {}, "name 'Bad_Name' is not valid"),
    ("p", "10.0.0.300/16", {}, "not a valid CIDR"),
    ("p", "10.0.0.0/16", {"block_size": 19}, "take 20-32"),
    ("p", "fd00::/64", {"block_size": 115}, "take 116-128"),
    ("p", "10.0.0.0/28", {}, "smaller than one block"),
    ("p", "10.0.0.0/16", {"ipip_mode": "Always", "vxlan_mode": "CrossSubnet"}, "both"),
    ("p", "fd00::/64", {"ipip_mode": "Always"}, "must be Never for an IPv6"),
    ("p", "10.0.0.0/16", {"vxlan_mode": "always"}, "is not one of"),
    ("p", "169.254.0.0/20", {}, "link-local"),
    ("p", "10.0.0.0/16", {"node_selector": "zone = 'a'"}, "nodeSelector: cannot parse selector"),
])
def test_invalid_pools_are_refused(name, cidr, options, words):
    with pytest.raises(InvalidPool, match=words.replace("(", r"\(")):
        build_pool(name, cidr, **options)


def test_overlapping_or_duplicate_pools_are_refused(make_pool):
    make_pool("a", "10.0.0.0/16")
    with pytest.raises(InvalidPool, match=r"10.0.128.0/17 overlaps IP pool a \(10.0.0.0/16\)"):
        make_pool("b", "10.0.128.0/17")
    with pytest.raises(InvalidPool, match="already exists"):
        make_pool("a", "10.9.0.0/16")
    make_pool("v6", "fd00::/64")  # other versions never overlap


def test_encapsulation_is_switched_on_in_felix(resources, make_pool):
    make_pool("plain", "10.0.0.0/16")
    assert resources.get("FelixConfiguration", "default") is None
    make_pool("ipip", "10.1.0.0/16", ipip_mode="CrossSubnet")
    felix = resources.get("FelixConfiguration", "default")
    assert felix.spec == {"ipipEnabled": True} and "uid" in felix.metadata
    felix.spec["logSeverityScreen"] = "Info"
    resources.update(felix)
    make_pool("vxlan", "10.2.0.0/16", vxlan_mode="Always")
    assert resources.get("FelixConfiguration", "default").spec == {
        "ipipEnabled": True, "logSeverityScreen": "Info", "vxlanEnabled": True}


def test_update_pool(resources, make_pool):
    pool = make_pool("a", "10.0.0.0/16")
    updated = update_pool(resources, replace(pool, vxlan_mode="Always", nat_outgoing=True))
    assert get_pool(resources, "a").spec() == updated.spec() == {
        "cidr": "10.0.0.0/16", "vxlanMode": "Always", "ipipMode": "Never",
        "natOutgoing": True, "blockSize": 26, "nodeSelector": "all()"}
    assert updated.resource.metadata["uid"] == pool.resource.metadata["uid"]
    assert resources.get("FelixConfiguration", "default").spec == {"vxlanEnabled": True}
    with pytest.raises(ResourceConflict):  # read before the update above
        update_pool(resources, replace(pool, disabled=True))
    with pytest.raises(InvalidPool, match="blockSize cannot change"):
        update_pool(resources, replace(updated, block_size=24))
    fresh = build_pool("a", "10.0.0.0/16", disabled=True)  # no stored revision: latest
    assert update_pool(resources, fresh).disabled


def test_lookups(resources, make_pool):
    make_pool("a", "10.0.0.0/16")
    assert find_pool_by_cidr(resources, "10.0.7.7/16").name == "a"  # masked first
    assert find_pool_by_cidr(resources, "10.0.0.0/17") is None
    with pytest.raises(PoolNotFound,
                       match=r"no Calico IP pool named 'b'; pools: a \(10.0.0.0/16\)"):
        get_pool(resources, "b")


def test_node_labels(resources):
    assert node_labels(resources, "nowhere") == {}
    resources.create(Resource(kind="Node", name="host1", metadata={"labels": {"zone": "a"}}))
    assert node_labels(resources, "host1") == {"zone": "a"}
    pool = build_pool("p", "10.0.0.0/16", node_selector="zone == 'a'")
    assert pool.selects(node_labels(resources, "host1"))
    pool = build_pool("q", "10.1.0.0/16", node_selector="zone in {'a', 'b'} && !has(gpu)")
    assert pool.selects(node_labels(resources, "host1")) and not pool.selects({"zone": "c"})
    assert not pool.selects(node_labels(resources, "host2"))


def test_delete_empty_pool_releases_its_blocks(etcd_client, resources, make_pool, node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    keep = make_pool("b", "10.1.0.0/24", block_size=28)
    ipam1, ipam2 = node_ipam("host1"), node_ipam("host2")
    ips = [ipam1.auto_assign(4, "h1", None, ["a"]), ipam2.auto_assign(4, "h2", None, ["a"]),
           ipam1.auto_assign(4, "h3", None, ["b"])]
    ipam1.release_ips(ips[:1])
    ipam2.release_ips(ips[1:2])
    delete_pool(resources, "a", grace=0)
    assert [p.name for p in list_pools(resources)] == ["b"]
    assert [b.cidr in keep.cidr for _, b, _ in BlockStore(etcd_client).blocks()] == [True]
    assert [a.cidr in keep.cidr for a in BlockStore(etcd_client).affinities()] == [True]
    assert_consistent(etcd_client)


def test_delete_refused_while_addresses_are_allocated(etcd_client, resources, make_pool,
                                                      node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ip = node_ipam("host1").auto_assign(4, "h1", None)
    with pytest.raises(PoolInUse, match="still has 1 allocated address"):
        delete_pool(resources, "a", grace=0)
    assert not get_pool(resources, "a").disabled  # nothing was changed
    assert allocations(etcd_client) == {str(ip): "h1"}


def test_forced_delete_keeps_allocations_without_affinity(etcd_client, resources, make_pool,
                                                          node_ipam):
    make_pool("a", "10.0.0.0/24", block_size=28)
    ipam = node_ipam("host1")
    ip = ipam.auto_assign(4, "h1", None)
    delete_pool(resources, "a", force=True, grace=0)
    assert list_pools(resources) == []
    (key, block, _), = BlockStore(etcd_client).blocks()
    assert block.affinity is None and block.in_use == 1
    assert etcd_client.get(affinity_key("host1", block.cidr)) is None
    assert ipam.allocation(ip) == ("h1", {})  # still found without its pool
    # A new pool over the leftover block must keep its block size ...
    with pytest.raises(InvalidPool, match="blocks of size /28"):
        create_pool(resources, build_pool("a2", "10.0.0.0/24", block_size=29))
    # ... and releasing the last address deletes the orphaned block.
    assert ipam.release_ips([ip]) == []
    assert etcd_client.get(key) is None
    assert_consistent(etcd_client, in_pools=False)
    create_pool(resources, build_pool("a2", "10.0.0.0/24", block_size=29))


def test_pool_from_resource_keeps_unknown_spec_fields(etcd_client, resources):
    value = json.loads(CALICOCTL_POOL)
    value["spec"]["allowedUses"] = ["Workload", "Tunnel"]
    etcd_client.put(pool_key("net1"), json.dumps(value))
    pool = get_pool(resources, "net1")
    assert pool.to_resource().spec["allowedUses"] == ["Workload", "Tunnel"]
