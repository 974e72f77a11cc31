"""The allocation block model and the IPAM key/value helpers (no etcd)."""

import json

import pytest
from netaddr import IPAddress, IPNetwork

from ipam.allocator import BlockWalk, fnv32
from ipam.blocks import (CONFIRMED, PENDING, AffinityMismatch, AllocationBlock, IpamConfig,
                         OrdinalInUse, affinity_key, affinity_state, affinity_value, block_key,
                         cidr_from_key, handle_blocks, handle_key, handle_value, parse_affinity_key)
from ipam.pools import build_pool
from tests.ipam.support import config_value, handle_counts, invariant_errors

NULLS = ",".join(["null"] * 62)
# calico-datastore.md §3.1: a /26 on host1, ordinal 0 the IPIP tunnel address
# (handle + attributes), ordinal 1 a libnetwork-plugin container (neither).
EXAMPLE = (
    '{"cidr":"192.168.10.0/26","affinity":"host:host1","strictAffinity":false,'
    f'"allocations":[0,1,{NULLS}],'
    f'"unallocated":[{",".join(map(str, range(2, 64)))}],'
    '"attributes":[{"handle_id":"ipip-tunnel-addr-host1","secondary":{"node":"host1",'
    '"type":"ipipTunnelAddress"}},{"handle_id":null,"secondary":null}],"deleted":false}')
NODE = "host1"


def new_block(cidr="10.0.0.0/29", node=NODE):
    return AllocationBlock.new(IPNetwork(cidr), "host:" + node)


def test_block_json_is_byte_identical_to_libcalico_go():
    block = AllocationBlock.new(IPNetwork("192.168.10.0/26"), "host:host1")
    block.auto_assign(1, "ipip-tunnel-addr-host1",
                      {"type": "ipipTunnelAddress", "node": "host1"}, NODE, True)
    block.auto_assign(1, None, None, NODE, True)
    assert block.to_json() == EXAMPLE
    assert AllocationBlock.from_json(EXAMPLE).to_json() == EXAMPLE
    assert invariant_errors(block, block_key(block.cidr)) == []


def test_read_tolerates_newer_and_older_fields():
    value = json.loads(EXAMPLE)
    del value["deleted"], value["strictAffinity"], value["affinity"]
    value.update(hostAffinity="host9", sequenceNumber=7)
    block = AllocationBlock.from_json(json.dumps(value))
    assert block.affinity == "host:host9" and block.host == "host9"
    assert block.in_use == 2 and block.free == 62


def test_auto_assign_takes_from_the_front_and_release_appends():
    block = new_block()
    assert block.auto_assign(3, "h1", None, NODE, True) == [
        IPAddress("10.0.0.0"), IPAddress("10.0.0.1"), IPAddress("10.0.0.2")]
    released = block.release([IPAddress("10.0.0.1")])
    assert released.freed == 1 and released.by_handle == {"h1": 1}
    assert block.unallocated == [3, 4, 5, 6, 7, 1]  # a freed address is reused last
    assert block.auto_assign(10, "h2", None, NODE, True)[-1] == IPAddress("10.0.0.1")
    assert block.free == 0 and block.auto_assign(1, "h3", None, NODE, True) == []
    assert invariant_errors(block) == []


def test_attributes_are_shared_refcounted_and_compacted():
    block = new_block()
    attrs = {"node": NODE}
    a, b = block.auto_assign(2, "h1", attrs, NODE, True)
    (c,) = block.auto_assign(1, "h2", attrs, NODE, True)
    (d,) = block.auto_assign(1, "h3", None, NODE, True)
    assert block.allocations[:4] == [0, 0, 1, 2]
    result = block.release([a, c, IPAddress("10.0.0.6")])
    assert result.not_allocated == [IPAddress("10.0.0.6")]
    assert result.by_handle == {"h1": 1, "h2": 1}
    # h1 still holds b; h2's attribute is gone and h3's index moved down.
    assert [x["handle_id"] for x in block.attributes] == ["h1", "h3"]
    assert block.allocation(b) == ("h1", attrs) and block.allocation(d) == ("h3", {})
    assert block.allocation(a) is None
    assert invariant_errors(block) == []


def test_release_by_handle_frees_every_address_of_the_handle():
    block = new_block()
    block.auto_assign(2, "h1", None, NODE, True)
    block.auto_assign(1, "h2", None, NODE, True)
    block.assign(IPAddress("10.0.0.7"), "h1", None, NODE, True)
    assert block.release_by_handle("h1") == 3
    assert block.release_by_handle("h1") == 0
    assert handle_counts(block) == {"h2": 1}
    assert block.unallocated[-3:] == [0, 1, 7]
    assert invariant_errors(block) == []


def test_assign_a_given_address():
    block = new_block()
    block.assign(IPAddress("10.0.0.5"), "h1", None, NODE, True)
    assert 5 not in block.unallocated
    with pytest.raises(OrdinalInUse):
        block.assign(IPAddress("10.0.0.5"), "h2", None, NODE, True)
    with pytest.raises(ValueError):
        block.assign(IPAddress("10.0.0.8"), "h2", None, NODE, True)
    with pytest.raises(ValueError):
        block.release([IPAddress("fd00::1")])


def test_affinity_check():
    block = new_block(node="other")
    with pytest.raises(AffinityMismatch):
        block.auto_assign(1, "h", None, NODE, affinity_check=True)
    assert block.auto_assign(1, "h", None, NODE, affinity_check=False)  # borrowing
    orphan = AllocationBlock.new(IPNetwork("10.0.0.8/29"))
    with pytest.raises(AffinityMismatch):
        orphan.assign(IPAddress("10.0.0.9"), "h", None, NODE, affinity_check=True)
    old_strict = new_block(node="other")
    old_strict.strict_affinity = True  # Calico <= 3.12 blocks enforce it themselves
    with pytest.raises(AffinityMismatch):
        old_strict.auto_assign(1, "h", None, NODE, affinity_check=False)


def test_invariant_checker_finds_each_kind_of_damage():
    pool = build_pool("p", "10.0.0.0/24", block_size=29)
    good = new_block()
    good.auto_assign(2, "h", None, NODE, True)
    assert invariant_errors(good, block_key(good.cidr), [pool]) == []

    def damaged(change):
        block = AllocationBlock.from_json(good.to_json())
        change(block)
        return block

    cases = {
        "allocations for": lambda b: b.allocations.append(None),
        "duplicates": lambda b: b.unallocated.append(2),
        "differs": lambda b: b.unallocated.remove(7),
        "points past": lambda b: b.allocations.__setitem__(0, 5),
        "not referenced": lambda b: b.attributes.append({"handle_id": "x", "secondary": None}),
    }
    for words, change in cases.items():
        assert any(words in e for e in invariant_errors(damaged(change))), words
    assert "does not match key" in invariant_errors(good, "/calico/ipam/v2/x")[0]
    assert "in no pool" in invariant_errors(good, pools=[build_pool("q", "10.9.0.0/24")])[0]
    wrong_size = build_pool("p", "10.0.0.0/24", block_size=28)
    assert "is not a /28" in invariant_errors(good, pools=[wrong_size])[0]


def test_keys():
    v4, v6 = IPNetwork("192.168.10.0/26"), IPNetwork("fd00::/122")
    assert block_key(v4) == "/calico/ipam/v2/assignment/ipv4/block/192.168.10.0-26"
    assert block_key(v6) == "/calico/ipam/v2/assignment/ipv6/block/fd00::-122"
    assert affinity_key("host1", v4) == "/calico/ipam/v2/host/host1/ipv4/block/192.168.10.0-26"
    assert parse_affinity_key(affinity_key("host1", v6)) == ("host1", v6)
    assert parse_affinity_key("/calico/ipam/v2/host/host1") is None
    assert cidr_from_key(block_key(v6)) == v6
    assert handle_key("h.1") == "/calico/ipam/v2/handle/h.1"


def test_values():
    assert json.dumps(affinity_value(PENDING), separators=(",", ":")) == \
        '{"state":"pending","deleted":false}'
    assert affinity_state(b'{"state":"pendingDeletion","deleted":false}') == "pendingDeletion"
    assert affinity_state(b'""') == CONFIRMED  # before Calico 3.0.7: implicitly confirmed
    assert affinity_state(b"{}") == CONFIRMED
    assert json.dumps(handle_value({"192.168.10.0/26": 1}), separators=(",", ":")) == \
        '{"block":{"192.168.10.0/26":1},"deleted":false}'
    assert handle_blocks(b'{"block":{"10.0.0.0/26":2},"deleted":false}') == {"10.0.0.0/26": 2}


def test_ipam_config_read_semantics():
    assert IpamConfig.from_json(None) == IpamConfig(strict_affinity=False,
                                                    auto_allocate_blocks=True)
    # omitempty: a stored config without the field means false
    assert IpamConfig.from_json(b"{}") == IpamConfig(False, False)
    assert IpamConfig.from_json(b'{"strict_affinity":true,"auto_allocate_blocks":true}') \
        == IpamConfig(True, True)
    assert config_value(True) == {"strict_affinity": True, "auto_allocate_blocks": True}


def test_fnv32_matches_go_hash_fnv_new32():
    assert fnv32(b"") == 0x811C9DC5
    assert fnv32(b"a") == 0x050C5D7E
    assert fnv32(b"foobar") == 0x31F0B262


def test_block_walk_is_stable_per_node_and_covers_the_pool():
    pool = build_pool("p", "10.0.0.0/24", block_size=28)
    walk = list(BlockWalk(pool, "host1"))
    assert walk == list(BlockWalk(pool, "host1"))
    assert sorted(walk) == [IPNetwork(f"10.0.0.{16 * i}/28") for i in range(16)]
    assert [BlockWalk(pool, "host1").position(c) for c in walk] == list(range(16))
    starts = {next(iter(BlockWalk(pool, f"host{i}"))) for i in range(8)}
    assert len(starts) > 1  # different hosts start in different places
