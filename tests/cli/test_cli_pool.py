"""`pool create|list|delete` against a real etcd."""

from ipam.allocator import Ipam
from tests.cli.conftest import NODE, no_traceback


def test_create_with_defaults_and_list(cli, resources):
    result = cli("pool", "create", "10.77.0.0/16")
    assert result.code == 0, result.err
    assert "pool-10-77-0-0-16" in result.out
    stored = resources.get("IPPool", "pool-10-77-0-0-16")
    assert stored.spec == {"cidr": "10.77.0.0/16", "vxlanMode": "Never", "ipipMode": "Never",
                           "blockSize": 26, "nodeSelector": "all()"}
    assert stored.metadata["uid"] and stored.metadata["creationTimestamp"]

    table = cli("pool", "list").out.splitlines()
    assert table[0].split() == ["NAME", "CIDR", "SELECTOR"]
    assert table[1].split() == ["pool-10-77-0-0-16", "10.77.0.0/16", "all()"]


def test_create_with_options(cli, resources):
    result = cli("pool", "create", "10.78.1.0/24", "--name", "pool-78", "--block-size", "28",
                 "--nat-outgoing", "--vxlan-mode", "CrossSubnet", "--disabled",
                 "--node-selector", "zone == 'a'", "-o", "json")
    assert result.code == 0, result.err
    assert result.json() == [{"result": "created", "kind": "IPPool", "name": "pool-78"}]
    assert resources.get("IPPool", "pool-78").spec == {
        "cidr": "10.78.1.0/24", "vxlanMode": "CrossSubnet", "ipipMode": "Never",
        "natOutgoing": True, "disabled": True, "blockSize": 28, "nodeSelector": "zone == 'a'"}
    # Felix is told to turn VXLAN on, as libcalico-go does.
    assert resources.get("FelixConfiguration", "default").spec == {"vxlanEnabled": True}

    wide = cli("pool", "list", "-o", "wide").out.splitlines()
    assert wide[0].split() == ["NAME", "CIDR", "SELECTOR", "IPIPMODE", "VXLANMODE",
                               "NATOUTGOING", "DISABLED", "BLOCKSIZE"]
    assert "CrossSubnet" in wide[1] and "28" in wide[1]
    listed = cli("pool", "list", "-o", "json").json()
    assert listed["kind"] == "IPPoolList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["pool-78"]


def test_create_refusals(cli):
    assert cli("pool", "create", "10.77.0.0/16").code == 0
    overlap = cli("pool", "create", "10.77.5.0/24", "--name", "inner")
    assert overlap.code == 1
    no_traceback(overlap)
    assert "overlaps IP pool pool-10-77-0-0-16" in overlap.err
    too_small = cli("pool", "create", "10.90.0.0/30")
    assert too_small.code == 1 and "smaller than one block" in too_small.err
    bad_name = cli("pool", "create", "10.91.0.0/16", "--name", "Bad_Name")
    assert bad_name.code == 1 and "name 'Bad_Name' is not valid" in bad_name.err


def test_delete(cli, resources):
    cli("pool", "create", "10.77.0.0/16", "--name", "pool-77")
    result = cli("pool", "delete", "pool-77")
    assert result.code == 0, result.err
    assert "deleted" in result.out
    assert resources.get("IPPool", "pool-77") is None
    missing = cli("pool", "delete", "pool-77")
    assert missing.code == 1 and "there is no Calico IP pool named 'pool-77'" in missing.err
    no_traceback(missing)


def test_delete_refused_while_addresses_are_allocated_unless_forced(cli, etcd_client, resources):
    cli("pool", "create", "10.77.0.0/16", "--name", "pool-77")
    ip = Ipam(etcd_client, NODE).auto_assign(4, "libnetwork.test", {"node": NODE})
    refused = cli("pool", "delete", "pool-77")
    assert refused.code == 1
    no_traceback(refused)
    assert "1 allocated address" in refused.err
    assert resources.get("IPPool", "pool-77") is not None

    forced = cli("pool", "delete", "pool-77", "--force")
    assert forced.code == 0, forced.err
    assert resources.get("IPPool", "pool-77") is None
    # The address stays allocated outside any pool until released.
    assert Ipam(etcd_client, NODE).allocation(ip) is not None
