"""bird.cfg from Calico's records, against a real etcd: records written to
etcd, the BGP view fed by a snapshot, the rendered text checked for what
calico/node's confd would give, and every rendered config parsed by BIRD
itself (`bird -p -c`)."""

import json
import re
import subprocess

import pytest

from agent.bgp.birdconfig import render
from agent.bgp.view import BgpView
from datastore.etcd import Etcd
from datastore.follower import snapshot
from datastore.resources import Resource
from tests.agent.cluster import affinity_record, block_record, pool_record


class Unused:
    """The view's daemon: these tests render only (tests/agent/test_bgp_kernel.py runs BIRD)."""


def node(name, address, address6=None, labels=None, as_number=None, rr=None):
    bgp = {"ipv4Address": address}
    if address6:
        bgp["ipv6Address"] = address6
    if as_number:
        bgp["asNumber"] = as_number
    if rr:
        bgp["routeReflectorClusterID"] = rr
    return Resource("Node", name, {"bgp": bgp}, metadata={"labels": labels or {}})


def bgp_peer(name, **spec):
    return Resource("BGPPeer", name, spec)


def bgp_configuration(name="default", **spec):
    return Resource("BGPConfiguration", name, spec)


@pytest.fixture
def cluster(etcd_clean, tmp_path):
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)

    def write(*items):
        for item in items:
            key, value = (item.key, item.to_json()) if isinstance(item, Resource) else item
            etcd_clean.put(key, value if isinstance(value, str) else value.decode())

    def config_of(nodename):
        view = BgpView(nodename, Unused())
        snapshot(etcd, (view,))
        text = render(view.inputs())
        path = tmp_path / f"{nodename}.cfg"
        path.write_text(text)
        check = subprocess.run(["bird", "-p", "-c", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr + text
        return text

    write(node("h1", "10.99.0.11/24"), node("h2", "10.99.0.12/24"),
          node("h3", "10.99.0.9/24"),
          pool_record("plain", "192.168.0.0/16"),
          pool_record("tunnelled", "10.50.0.0/16", vxlan_mode="Always"),
          affinity_record("h1", "192.168.1.0/26"), block_record("192.168.1.0/26", "h1"),
          affinity_record("h1", "10.50.1.0/26"), block_record("10.50.1.0/26", "h1"),
          affinity_record("h2", "192.168.2.0/26"),
          block_record("192.168.2.0/26", "h2", [("192.168.2.5", "h1")]),
          affinity_record("h1", "192.168.9.0/26", state="pending"))
    yield write, config_of
    etcd.close()


def protocol(text, name):
    match = re.search(rf"^protocol bgp {name} from \S+ {{\n(.*?)^}}", text, re.M | re.S)
    assert match, f"no protocol {name} in\n{text}"
    return match.group(1)


def bgp_protocols(text):
    return re.findall(r"^protocol bgp (\S+)", text, re.M)


def test_default_mesh_exports_own_plain_blocks_and_borrowed_addresses(cluster):
    _, config_of = cluster
    text = config_of("h1")
    assert "router id 10.99.0.11;" in text
    assert "local as 64512;" in text  # BGPConfiguration's default
    assert bgp_protocols(text) == ["Mesh_10_99_0_12", "Mesh_10_99_0_9"]
    # The higher IP *as a string* waits, as confd compares: "10.99.0.9" > "10.99.0.11".
    assert "passive on" in protocol(text, "Mesh_10_99_0_12")
    assert "passive on" in protocol(text, "Mesh_10_99_0_9")
    assert "multihop" not in protocol(text, "Mesh_10_99_0_12")
    assert "source address 10.99.0.11;" in protocol(text, "Mesh_10_99_0_12")
    static = re.search(r"protocol static calico_blocks4 \{(.*?)\}", text, re.S).group(1)
    # Own confirmed block of the plain pool, and the address borrowed from h2's
    # block; not the VXLAN pool's block, not the pending affinity.
    assert re.findall(r"route (\S+) blackhole", static) == ["192.168.1.0/26", "192.168.2.5/32"]
    assert "if net ~ [ 10.50.1.0/26, 192.168.1.0/26 ] then reject;  # our own blocks" in text
    assert "if net ~ [ 10.50.0.0/16+ ] then reject;  # VXLAN/IPIP: the agent's" in text
    assert "if net = 0.0.0.0/0 then reject;" in text
    assert "# IPv6 disabled on this node" in text

    other = config_of("h3")
    assert bgp_protocols(other) == ["Mesh_10_99_0_11", "Mesh_10_99_0_12"]
    assert "passive on" not in protocol(other, "Mesh_10_99_0_11")  # "10.99.0.11" < "10.99.0.9"


def test_configuration_and_explicit_peers(cluster):
    write, config_of = cluster
    write(bgp_configuration(asNumber=64513, nodeToNodeMeshEnabled=False,
                            logSeverityScreen="Debug", listenPort=1179),
          bgp_configuration("node.h2", logSeverityScreen="Warning"),
          node("h2", "10.99.0.12/24", labels={"rack": "r1"}, as_number=65002),
          bgp_peer("tor", peerIP="10.99.0.1", asNumber=65000, keepOriginalNextHop=True),
          bgp_peer("ibgp-tor", peerIP="10.99.0.2", asNumber=64513, keepOriginalNextHop=True,
                   node="h1", maxRestartTime="2m", numAllowedLocalASNumbers=1),
          bgp_peer("rack1", nodeSelector="rack == 'r1'", peerIP="10.99.0.3:1790",
                   asNumber=65003, ttlSecurity=2),
          bgp_peer("secret", peerIP="10.99.0.4", asNumber=65004,
                   password={"secretKeyRef": {"name": "s", "key": "k"}}))
    text = config_of("h1")
    assert "local port 1179 as 64513;" in text and "debug all;" in text
    # No mesh; the global peer, the node-specific one; the password peer is refused.
    assert bgp_protocols(text) == ["Global_10_99_0_1", "Node_10_99_0_2"]
    tor = protocol(text, "Global_10_99_0_1")
    assert "neighbor 10.99.0.1 as 65000;" in tor and "multihop;" in tor
    assert "export where calico_export4(false); next hop keep; };" in tor  # eBGP: kept
    ibgp = protocol(text, "Node_10_99_0_2")
    assert "next hop keep" not in ibgp  # iBGP: confd writes it for eBGP only
    assert "export where calico_export4(true);" in ibgp
    assert "graceful restart time 120;" in ibgp and "allow local as 1;" in ibgp

    h2 = config_of("h2")
    assert "local port 1179 as 65002;" in h2  # its own AS
    assert "debug" not in h2  # node.h2's Warning: no debug
    assert bgp_protocols(h2) == ["Global_10_99_0_1", "Node_10_99_0_3_port_1790"]
    rack = protocol(h2, "Node_10_99_0_3_port_1790")
    assert "neighbor 10.99.0.3 port 1790 as 65003;" in rack
    assert "ttl security on;" in rack and "multihop 2;" in rack


def test_route_reflector_topology(cluster):
    write, config_of = cluster
    write(bgp_configuration(nodeToNodeMeshEnabled=False),
          node("h1", "10.99.0.11/24", labels={"route-reflector": "true"}, rr="224.0.0.1"),
          node("h2", "10.99.0.12/24", labels={"rack": "r1"}),
          bgp_peer("to-rr", nodeSelector="all()", peerSelector="route-reflector == 'true'"))
    client = config_of("h2")
    assert bgp_protocols(client) == ["Node_10_99_0_11"]
    assert "rr client" not in client
    reflector = config_of("h1")
    # Reverse peerings to every client, each one an RR client of ours.
    assert bgp_protocols(reflector) == ["Node_10_99_0_12", "Node_10_99_0_9"]
    assert "rr client;\n  rr cluster id 224.0.0.1;" in protocol(reflector, "Node_10_99_0_12")
    # A reflector exports what it learned inside the plain pools: it reflects.
    assert ("if internal_peer && source = RTS_BGP && net ~ [ 192.168.0.0/16+ ] then accept;"
            in reflector)

    write(bgp_configuration(nodeToNodeMeshEnabled=True))
    # The mesh leaves the reflector out, and the reflector builds none.
    assert bgp_protocols(config_of("h2")) == ["Mesh_10_99_0_9", "Node_10_99_0_11"]
    assert bgp_protocols(config_of("h1")) == ["Node_10_99_0_12", "Node_10_99_0_9"]


def test_ipv6_peers_and_blocks(cluster):
    write, config_of = cluster
    write(node("h1", "10.99.0.11/24", address6="fd00:99::11/64"),
          node("h2", "10.99.0.12/24", address6="fd00:99::12/64"),
          pool_record("plain6", "fd10::/48"),
          affinity_record("h1", "fd10::/122"), block_record("fd10::/122", "h1"),
          bgp_peer("tor6", peerIP="fd00:99::1", asNumber=65000))
    text = config_of("h1")
    assert bgp_protocols(text) == ["Mesh_10_99_0_12", "Mesh_10_99_0_9", "Global_fd00_99__1",
                                   "Mesh_fd00_99__12"]
    assert "template bgp bgp_template6" in text
    assert "source address fd00:99::11;" in protocol(text, "Mesh_fd00_99__12")
    static6 = re.search(r"protocol static calico_blocks6 \{(.*?)\}", text, re.S).group(1)
    assert re.findall(r"route (\S+) blackhole", static6) == ["fd10::/122"]
    assert "if net = ::/0 then reject;" in text


def test_unchanged_records_render_the_same_text(cluster):
    """What lets the daemon skip `configure`: rendering is deterministic."""
    write, config_of = cluster
    first = config_of("h1")
    write(node("h2", "10.99.0.12/24"))  # rewritten as it was
    assert config_of("h1") == first


def test_an_unparsable_record_counts_as_absent(cluster):
    write, config_of = cluster
    write(("/calico/resources/v3/projectcalico.org/bgppeers/broken",
           json.dumps({"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3",
                       "metadata": {"name": "broken"}, "spec": {"peerIP": "not-an-ip"}})))
    assert bgp_protocols(config_of("h1")) == ["Mesh_10_99_0_12", "Mesh_10_99_0_9"]
