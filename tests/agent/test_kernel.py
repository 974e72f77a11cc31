"""The reconciler and the VXLAN device against the real kernel, in
throw-away namespaces (a forked child joins the namespace, as in
tests/dataplane): routes appear, are replaced and removed, routes of other
protocols are never touched, and a second run changes nothing."""

import os
import subprocess
import time
from unittest import mock

import pytest
from netaddr import IPAddress, IPNetwork

from agent.routing import kernel, nat, vxlan
from agent.routing.reconciler import Reconciler
from tests.agent.cluster import affinity_record, block_record, node_record, pool_record, state_of
from tests.lab.netns import run_in
from tests.lab import Lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

ME = IPNetwork("10.0.0.1/24")


@pytest.fixture
def host():
    """A namespace with 10.0.0.1/24 on eth0 (its peer in a namespace of its own)."""
    with Lab() as lab:
        ns, peer = lab.netns("agent-host"), lab.netns("agent-peer")
        lab.veth(ns, "eth0", peer, "eth0", "10.0.0.1/24", "10.0.0.2/24")
        yield ns


def ip(ns, *args):
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True,
                          text=True).stdout


def routes(ns):
    return sorted(line.strip() for line in ip(ns, "route", "show").splitlines())


def cluster(*extra):
    return state_of(node_record("h1", str(ME)), node_record("h2", "10.0.0.2/24"),
                    node_record("h3", "10.0.0.3/24"),
                    pool_record("p", "192.168.0.0/16", nat_outgoing=True), *extra)


def reconcile(*states):
    """Run a fresh Reconciler's full sync over each state in turn (in the
    current namespace); how many times each run called apply_routes."""
    return reconcile_with(None, *states)


def reconcile_with(address6, *states):
    """reconcile, for a node with IPv6 address address6 (None: IP6=none)."""
    reconciler = Reconciler(None, "h1", ME, resync_interval=30, address6=address6)
    calls = []
    real = kernel.apply_routes
    with mock.patch.object(kernel, "apply_routes",
                           side_effect=lambda c: calls.append(c) or real(c)):
        for state in states:
            before = len(calls)
            reconciler.sync(state, full=True)
            calls.append(len(calls) - before)
    return [c for c in calls if isinstance(c, int)]


def test_routes_added_replaced_removed_and_foreign_ones_untouched(host):
    ip(host, "route", "add", "192.168.3.0/26", "via", "10.0.0.2", "proto", "static")
    ip(host, "route", "add", "172.16.0.0/24", "via", "10.0.0.2", "proto", "static")
    first = cluster(affinity_record("h1", "192.168.0.0/26"),
                    affinity_record("h2", "192.168.1.0/26"),
                    affinity_record("h3", "192.168.3.0/26"),  # a foreign route holds it
                    block_record("192.168.0.0/26", "h1", [("192.168.0.7", "h2")]))
    run_in(host, reconcile, first)
    assert routes(host) == sorted([
        "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1",
        "172.16.0.0/24 via 10.0.0.2 dev eth0 proto static",
        "192.168.0.7 via 10.0.0.2 dev eth0 proto 80",
        "192.168.1.0/26 via 10.0.0.2 dev eth0 proto 80",
        "192.168.3.0/26 via 10.0.0.2 dev eth0 proto static",
        "blackhole 192.168.0.0/26 proto 80",
    ])
    # h2 moves to another address, its borrowed address goes, h1's block goes.
    second = state_of(node_record("h1", str(ME)), node_record("h2", "10.0.0.9/24"),
                      pool_record("p", "192.168.0.0/16"),
                      affinity_record("h2", "192.168.1.0/26"))
    assert run_in(host, reconcile, second, second) == [1, 0]  # restart: nothing to do
    assert routes(host) == sorted([
        "10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.1",
        "172.16.0.0/24 via 10.0.0.2 dev eth0 proto static",
        "192.168.1.0/26 via 10.0.0.9 dev eth0 proto 80",
        "192.168.3.0/26 via 10.0.0.2 dev eth0 proto static",
    ])


def test_second_run_of_a_new_agent_changes_nothing(host):
    state = cluster(affinity_record("h2", "192.168.1.0/26"),
                    affinity_record("h1", "192.168.0.0/26"))
    assert run_in(host, reconcile, state) == [1]
    before = routes(host)
    assert run_in(host, reconcile, state, state) == [0, 0]
    assert routes(host) == before


def test_nat_outgoing_chain_follows_the_pools(host):
    run_in(host, reconcile, cluster())
    rules = subprocess.run(["ip", "netns", "exec", host, "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True, check=True).stdout
    assert f"-A POSTROUTING -j {nat.CHAIN}" in rules
    assert f"-A {nat.CHAIN} -d 192.168.0.0/16 -j RETURN" in rules
    assert f"-A {nat.CHAIN} -s 192.168.0.0/16 -j MASQUERADE" in rules
    without = state_of(node_record("h1", str(ME)), pool_record("p", "192.168.0.0/16"))
    run_in(host, reconcile, without)
    rules = subprocess.run(["ip", "netns", "exec", host, "iptables", "-t", "nat", "-S", nat.CHAIN],
                           capture_output=True, text=True, check=True).stdout
    assert rules.strip() == f"-N {nat.CHAIN}"


def test_vxlan_device_keeps_its_mac_and_is_rebuilt_when_wrong(host):
    mac = run_in(host, vxlan.ensure_device, IPAddress("192.168.0.1"), None,
                 IPAddress("10.0.0.1"), 1450)
    details = ip(host, "-d", "link", "show", "vxlan.calico")
    assert "vxlan id 4096" in details and "local 10.0.0.1" in details
    assert "dstport 4789" in details and "nolearning" in details and "mtu 1450" in details
    assert "192.168.0.1/32" in ip(host, "addr", "show", "vxlan.calico")
    # Same settings: same device; a new local address: rebuilt, MAC kept.
    assert run_in(host, vxlan.ensure_device, IPAddress("192.168.0.1"), mac,
                  IPAddress("10.0.0.1"), 1450) == mac
    ip(host, "addr", "add", "10.0.0.5/24", "dev", "eth0")
    assert run_in(host, vxlan.ensure_device, IPAddress("192.168.0.2"), mac,
                  IPAddress("10.0.0.5"), 1450) == mac
    assert "local 10.0.0.5" in ip(host, "-d", "link", "show", "vxlan.calico")
    assert "192.168.0.1/32" not in ip(host, "addr", "show", "vxlan.calico")


def test_vxlan_peers_arp_and_fdb(host):
    from agent.routing.routes import FdbEntry, Neighbour
    run_in(host, vxlan.ensure_device, IPAddress("192.168.0.1"), None, IPAddress("10.0.0.1"), 1450)
    want_n = {Neighbour(IPAddress("192.168.1.1"), "66:00:00:00:00:02")}
    want_f = {FdbEntry("66:00:00:00:00:02", IPAddress("10.0.0.2"))}

    def sync(neighbours, fdb):
        have_n, have_f = kernel.read_vxlan_peers("vxlan.calico")
        return kernel.apply_vxlan_peers(
            "vxlan.calico", kernel.diff({n.ip: n for n in neighbours}, {n.ip: n for n in have_n}),
            kernel.diff({f.mac: f for f in fdb}, {f.mac: f for f in have_f}))

    assert run_in(host, sync, want_n, want_f) == []
    assert run_in(host, kernel.read_vxlan_peers, "vxlan.calico") == (want_n, want_f)
    assert "192.168.1.1 lladdr 66:00:00:00:00:02 PERMANENT" in ip(host, "neigh", "show",
                                                                 "dev", "vxlan.calico")
    # The device ensured again as it is (each full resync) keeps its peers.
    mac = ip(host, "-j", "link", "show", "vxlan.calico").split('"address":"')[1].split('"')[0]
    run_in(host, vxlan.ensure_device, IPAddress("192.168.0.1"), mac, IPAddress("10.0.0.1"), 1450)
    assert run_in(host, kernel.read_vxlan_peers, "vxlan.calico") == (want_n, want_f)
    assert run_in(host, sync, set(), set()) == []
    assert run_in(host, kernel.read_vxlan_peers, "vxlan.calico") == (set(), set())


def resync_after_hand_deletion(state, interval):
    """A Reconciler driven as the watch drives it (a batch with no routing
    change: changed=False) after `ip route del` of one of its routes: the
    kernel's routes right after, and after resync_interval has passed."""
    reconciler = Reconciler(None, "h1", ME, resync_interval=interval)
    reconciler(state, True, True)  # the snapshot
    subprocess.run(["ip", "route", "del", "192.168.1.0/26"], check=True)
    reconciler(state, False, False)  # a batch before the interval: nothing re-read
    before = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    time.sleep(interval * 1.5)
    reconciler(state, False, False)
    after = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    return before, after


def test_a_route_deleted_by_hand_comes_back_at_the_next_full_resync(host):
    """The agent's resync (30 s: AgentSettings.resync_interval, no
    environment variable) shortened here to 0.5 s."""
    state = cluster(affinity_record("h2", "192.168.1.0/26"))
    before, after = run_in(host, resync_after_hand_deletion, state, 0.5)
    assert "192.168.1.0/26" not in before
    assert "192.168.1.0/26 via 10.0.0.2 dev eth0 proto 80" in after


def pyroute2_reads(device):
    """Our routes and the device's peers as pyroute2's IPRoute reads them:
    the readers' reference, field for field."""
    from pyroute2 import IPRoute

    from agent.routing.routes import FdbEntry, Neighbour, Route
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=device)[0]
        routes = {}
        for family, anywhere in ((2, "0.0.0.0"), (10, "::")):
            for m in ipr.route("dump", family=family, table=254, proto=kernel.ROUTE_PROTOCOL):
                kind = {1: "unicast", 6: "blackhole"}.get(m["type"])
                if kind is None:
                    continue
                dst = IPNetwork(f"{m.get('RTA_DST') or anywhere}/{m['dst_len']}")
                gateway, oif = m.get("RTA_GATEWAY"), m.get("RTA_OIF")
                routes[dst] = Route(dst, kind, IPAddress(gateway) if gateway else None,
                                    ipr.get_links(oif)[0].get("IFLA_IFNAME")
                                    if kind == "unicast" else None, bool(m["flags"] & 4))
        neighbours = {Neighbour(IPAddress(n.get("NDA_DST")), n.get("NDA_LLADDR").lower())
                      for family in (2, 10) for n in ipr.neigh("dump", ifindex=index, family=family)
                      if n["state"] & kernel.NUD_PERMANENT and n.get("NDA_LLADDR")}
        fdb = {FdbEntry(f.get("NDA_LLADDR").lower(), IPAddress(f.get("NDA_DST")))
               for f in ipr.fdb("dump", ifindex=index)
               if f.get("NDA_DST") and f.get("NDA_LLADDR") not in (None, "00:00:00:00:00:00")}
    return routes, neighbours, fdb


def test_routes_and_peers_read_as_pyroute2_reads_them(host):
    """read_routes and read_vxlan_peers parse the kernel's dumps themselves:
    the same answer as pyroute2's parser over ours and what is not ours
    (another protocol, another table, a neighbour not permanent)."""
    run_in(host, vxlan.ensure_device, IPAddress("192.168.0.1"), None, IPAddress("10.0.0.1"), 1450)
    for line in ("192.168.1.0/26 via 10.0.0.2 proto 80",
                 "192.168.2.0/26 via 192.168.2.0 dev vxlan.calico onlink proto 80",
                 "blackhole 192.168.0.0/26 proto 80",
                 "192.168.3.0/26 via 10.0.0.2 proto static",
                 "192.168.4.0/26 via 10.0.0.2 proto 80 table 100",
                 "fd00:1::/122 dev eth0 proto 80",
                 "blackhole fd00:2::/122 proto 80"):
        ip(host, "route", "add", *line.split())
    ip(host, "neigh", "add", "192.168.2.0", "lladdr", "66:00:00:00:00:03", "dev",
       "vxlan.calico", "nud", "permanent")
    ip(host, "neigh", "add", "192.168.2.9", "lladdr", "66:00:00:00:00:09", "dev",
       "vxlan.calico", "nud", "reachable")
    subprocess.run(["bridge", "-n", host, "fdb", "add", "66:00:00:00:00:03", "dev",
                    "vxlan.calico", "dst", "10.0.0.2", "self", "permanent"], check=True)
    routes, neighbours, fdb = run_in(host, pyroute2_reads, "vxlan.calico")
    assert len(routes) == 5 and len(neighbours) == 1 and len(fdb) == 1
    assert run_in(host, kernel.read_routes) == routes
    assert run_in(host, kernel.read_vxlan_peers, "vxlan.calico") == (neighbours, fdb)
