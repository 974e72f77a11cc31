"""`ipam show` and `ipam gc` against a real etcd."""

from datastore.resources import Resource
from driver.endpoints import workload_endpoint
from ipam.allocator import Ipam
from ipam.driver import IpamDriver
from ipam import handles
from tests.cli.conftest import NODE

TUNNEL_HANDLE = f"ipip-tunnel-addr-{NODE}"


def test_show(cli, etcd_client, make_pool):
    make_pool("pool-a", "10.80.0.0/24", block_size=28)
    make_pool("pool-b", "10.81.0.0/24")
    ours, theirs = Ipam(etcd_client, NODE), Ipam(etcd_client, "other-node")
    ours.auto_assign(4, "libnetwork.a", None)
    ours.auto_assign(4, "libnetwork.b", None)
    theirs.auto_assign(4, "libnetwork.c", None)

    report = cli("ipam", "show", "-o", "json").json()
    pool_a = report["pools"][0]
    assert (pool_a["name"], pool_a["cidr"], pool_a["size"], pool_a["inUse"]) == \
        ("pool-a", "10.80.0.0/24", 256, 3)
    assert sorted((b["node"], b["inUse"], b["size"]) for b in pool_a["blocks"]) == \
        [("other-node", 1, 16), (NODE, 2, 16)]
    assert report["pools"][1] == {"name": "pool-b", "cidr": "10.81.0.0/24", "size": 256,
                                  "inUse": 0, "blocks": []}
    assert report["nodes"] == [
        {"node": "other-node", "ipVersion": 4, "blocks": 1, "inUse": 1, "size": 16},
        {"node": NODE, "ipVersion": 4, "blocks": 1, "inUse": 2, "size": 16}]

    table = cli("ipam", "show").out.splitlines()
    assert table[0].split() == ["IP", "POOL", "CIDR", "IN", "USE", "SIZE", "USED"]
    assert table[1].split() == ["pool-a", "10.80.0.0/24", "3", "256", "1.2%"]
    assert any(line.split()[2:] == [NODE, "2", "16", "12.5%"] for line in table)


def _leak_scenario(etcd_client, resources):
    """A leaked address, one in use by an endpoint, and a tunnel address."""
    driver = IpamDriver(Ipam(etcd_client, NODE), NODE, resources)
    leaked = driver.request_address("CalicoPoolIPv4", "", None)["Address"]
    used = driver.request_address("CalicoPoolIPv4", "", None)["Address"]
    resources.create(workload_endpoint(NODE, "e" * 64, "n" * 64, [used], "ee:ee:ee:ee:ee:ee",
                                       ["net1"]))
    tunnel = Ipam(etcd_client, NODE).auto_assign(4, TUNNEL_HANDLE,
                                           {"node": NODE, "type": "ipipTunnelAddress"})
    return leaked.split("/")[0], used.split("/")[0], str(tunnel)


def test_gc_reports_then_releases_only_leaked_addresses(cli, etcd_client, resources, make_pool):
    make_pool("pool-a", "10.80.0.0/24")
    leaked, used, tunnel = _leak_scenario(etcd_client, resources)
    ipam = Ipam(etcd_client, NODE)
    leaked_handle = ipam.allocation(leaked)[0]

    fresh = cli("ipam", "gc")  # default grace: 300 s, nothing is old enough yet
    assert fresh.code == 0 and "no leaked addresses" in fresh.out

    report = cli("ipam", "gc", "--grace", "0", "-o", "json")
    assert report.code == 0, report.err
    assert report.json()["released"] is False
    assert [(x["address"], x["handle"], x["node"]) for x in report.json()["leaked"]] == \
        [(leaked, leaked_handle, NODE)]
    table = cli("ipam", "gc", "--grace", "0").out
    assert leaked in table and "ipam gc --apply" in table
    assert used not in table and tunnel not in table
    assert ipam.allocation(leaked) is not None  # only reported

    applied = cli("ipam", "gc", "--grace", "0", "--apply")
    assert applied.code == 0, applied.err
    assert "released 1 address(es)" in applied.out
    assert ipam.allocation(leaked) is None
    assert handles.get(etcd_client, leaked_handle) is None
    assert ipam.allocation(used) is not None
    assert ipam.allocation(tunnel) == (TUNNEL_HANDLE, {"node": NODE, "type": "ipipTunnelAddress"})
    assert cli("ipam", "gc", "--grace", "0", "-o", "json").json()["leaked"] == []


def test_gc_on_other_nodes_and_endpoints_in_any_namespace(cli, etcd_client, resources, make_pool):
    make_pool("pool-a", "10.80.0.0/24")
    other = IpamDriver(Ipam(etcd_client, "other-node"), "other-node", resources)
    leaked = other.request_address("CalicoPoolIPv4", "", None)["Address"].split("/")[0]
    kept = other.request_address("CalicoPoolIPv4", "", None)["Address"]
    resources.create(Resource(kind="WorkloadEndpoint", name="w", namespace="default",
                              spec={"node": "other-node", "ipNetworks": [kept]}))
    report = cli("ipam", "gc", "--grace", "0", "-o", "json").json()
    assert [(x["address"], x["node"]) for x in report["leaked"]] == [(leaked, "other-node")]


def test_gc_refuses_negative_grace(cli):
    result = cli("ipam", "gc", "--grace", "-1")
    assert result.code == 1 and "--grace must be 0 or more" in result.err


def test_show_lists_ipv6_blocks_and_counts_them_apart(cli, etcd_client, make_pool):
    make_pool("pool-4", "10.80.0.0/24")
    make_pool("pool-6", "fd00:80::/120")
    ours = Ipam(etcd_client, NODE)
    ours.auto_assign(4, "libnetwork.a", None)
    ours.auto_assign(6, "libnetwork.a", None)
    ours.auto_assign(6, "libnetwork.b", None)
    report = cli("ipam", "show", "-o", "json").json()
    pool_6 = next(p for p in report["pools"] if p["name"] == "pool-6")
    [block] = pool_6["blocks"]
    assert block["cidr"].startswith("fd00:80::") and block["cidr"].endswith("/122")
    assert (block["node"], block["inUse"], block["size"]) == (NODE, 2, 64)
    assert report["nodes"] == [
        {"node": NODE, "ipVersion": 4, "blocks": 1, "inUse": 1, "size": 64},
        {"node": NODE, "ipVersion": 6, "blocks": 1, "inUse": 2, "size": 64}]
    table = cli("ipam", "show").out
    assert any(line.split() == [NODE, "v6", "1", "2", "64", "3.1%"]
               for line in table.splitlines())
