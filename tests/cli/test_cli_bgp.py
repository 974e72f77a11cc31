"""apply / create / get / delete of BGPPeer and BGPConfiguration (issue 21),
against a real etcd: calicoctl's manifests, columns and aliases, and every
refusal before anything is written."""

import re

import pytest

from tests.cli.conftest import no_traceback

BGP_MANIFEST = """
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec:
  asNumber: 64512
  nodeToNodeMeshEnabled: false
  logSeverityScreen: Info
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: rack1-tor}
spec:
  nodeSelector: rack == 'r1'
  peerIP: 10.99.0.1
  asNumber: 65001
  keepOriginalNextHop: true
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: to-rr}
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: global-v6}
spec:
  peerIP: "[fd00:99::1]:1179"
  asNumber: "1.10"
"""


def test_apply_get_delete(cli, resources, tmp_path):
    manifest = tmp_path / "bgp.yaml"
    manifest.write_text(BGP_MANIFEST)
    applied = cli("apply", "-f", manifest, "-o", "json")
    assert applied.code == 0, applied.err
    assert [(o["result"], o["kind"], o["name"]) for o in applied.json()] == [
        ("created", "BGPConfiguration", "default"), ("created", "BGPPeer", "rack1-tor"),
        ("created", "BGPPeer", "to-rr"), ("created", "BGPPeer", "global-v6")]
    stored = resources.get("BGPPeer", "rack1-tor")
    assert stored.key == "/calico/resources/v3/projectcalico.org/bgppeers/rack1-tor"
    assert stored.spec == {"nodeSelector": "rack == 'r1'", "peerIP": "10.99.0.1",
                           "asNumber": 65001, "keepOriginalNextHop": True}

    # calicoctl's columns: the local side is a node, a selector or (global).
    peers = [re.split(r" {3,}", line) for line in cli("get", "bgppeers").out.splitlines()]
    assert peers[0] == ["NAME", "PEERIP", "NODE", "ASN"]
    assert sorted(peers[1:]) == [["global-v6", "[fd00:99::1]:1179", "(global)", "1.10"],
                                 ["rack1-tor", "10.99.0.1", "rack == 'r1'", "65001"],
                                 ["to-rr", "all()", "0"]]  # no PEERIP
    config = cli("get", "bgpconfig", "-o", "wide").out.split()
    assert config == ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER",
                      "default", "Info", "-", "64512"]  # false shows as -, as calicoctl

    for alias in ("bgppeer", "bgpp", "bps", "BGPPeers"):
        assert cli("get", alias, "rack1-tor", "-o", "json").json()["spec"]["asNumber"] == 65001
    listed = cli("get", "bgppeers", "-o", "yaml")
    assert "kind: BGPPeerList" in listed.out and "name: global-v6" in listed.out
    # What get prints applies again unchanged, resourceVersion and all.
    for kind in ("bgppeers", "bgpconfigurations"):
        (tmp_path / kind).write_text(cli("get", kind, "-o", "yaml").out)
        again = cli("apply", "-f", tmp_path / kind, "-o", "json")
        assert again.code == 0, again.err
        assert {o["result"] for o in again.json()} == {"unchanged"}

    assert cli("apply", "-f", "-", "-o", "json", stdin=BGP_MANIFEST).json()[0]["result"] \
        == "unchanged"
    deleted = cli("delete", "bgppeer", "rack1-tor")
    assert deleted.code == 0 and deleted.out.split()[3:] == ["deleted", "BGPPeer", "rack1-tor"]
    assert resources.get("BGPPeer", "rack1-tor") is None
    gone = cli("delete", "bgppeer", "rack1-tor")
    assert gone.code == 1 and "BGPPeer rack1-tor not found; list them with " \
        "`calico-libnetwork get bgppeers`" in gone.err
    assert cli("delete", "-f", "-", stdin=BGP_MANIFEST.split("---", 2)[2]).code == 0
    assert resources.list("BGPPeer") == []
    assert resources.get("BGPConfiguration", "default") is not None


def test_apply_updates_a_peer(cli, resources):
    cli("apply", "-f", "-", stdin=BGP_MANIFEST)
    before = resources.get("BGPPeer", "rack1-tor")
    changed = BGP_MANIFEST.replace("asNumber: 65001", "asNumber: 65002")
    result = cli("apply", "-f", "-", "-o", "json", stdin=changed)
    assert [o["result"] for o in result.json()] == ["unchanged", "updated", "unchanged",
                                                    "unchanged"]
    after = resources.get("BGPPeer", "rack1-tor")
    assert after.spec["asNumber"] == 65002 and after.metadata["uid"] == before.metadata["uid"]


def test_node_settings_in_bgp_configuration(cli, resources):
    node = ("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\n"
            "metadata: {name: node.host1}\nspec: {listenPort: 1179, logSeverityScreen: Debug}\n")
    assert cli("create", "-f", "-", stdin=node).code == 0
    assert resources.get("BGPConfiguration", "node.host1").spec["listenPort"] == 1179


PEER = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: p}\nspec: "
CONFIG = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: %s}\nspec: "


@pytest.mark.parametrize("manifest, message", [
    (PEER + "{peerIP: 10.0.0.1, asNumber: 65001, password: {secretKeyRef: {name: s, key: k}}}",
     "BGPPeer p: spec.password: BGP passwords are not supported yet"),
    (PEER + "{peerIP: 10.0.0.1}", "BGPPeer p: spec.asNumber: is needed with peerIP 10.0.0.1"),
    (PEER + "{asNumber: 65001}",
     "BGPPeer p: spec: give peerIP and asNumber (a router), or peerSelector"),
    (PEER + "{peerIP: 10.0.0.300, asNumber: 65001}",
     "spec.peerIP: '10.0.0.300' is not an IP address"),
    (PEER + "{peerIP: '10.0.0.1:70000', asNumber: 65001}", "the port must be a number 1-65535"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: 4294967296}",
     "spec.asNumber: 4294967296 is not an AS number 1-4294967295"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: '1.70000'}",
     "spec.asNumber: '1.70000' is not an AS number"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: 65001, node: a, nodeSelector: all()}",
     "spec.node: must be empty when nodeSelector is specified"),
    (PEER + "{peerSelector: all(), peerIP: 10.0.0.1}",
     "spec.peerIP: must be empty when peerSelector is specified"),
    (PEER + "{peerSelector: \"rack == \"}", "spec.peerSelector: cannot parse selector 'rack == '"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: 65001, keepOriginalNextHop: 'yes'}",
     "spec.keepOriginalNextHop: 'yes' is not true or false"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: 65001, sourceAddress: NodeIP}",
     "spec.sourceAddress: 'NodeIP' is not one of UseNodeIP, None"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: 65001, maxRestartTime: 2 minutes}",
     "spec.maxRestartTime: '2 minutes' is not a duration like 120s"),
    (PEER + "{peerIP: 10.0.0.1, asNumber: 65001, peerIp: 10.0.0.2}",
     "spec.peerIp: unknown field (fields: node, nodeSelector, peerIP, "),
    (CONFIG % "default" + "{serviceClusterIPs: [{cidr: 10.96.0.0/12}]}",
     "BGPConfiguration default: spec.serviceClusterIPs: advertising Kubernetes Services is "
     "not supported: Docker has no Services"),
    (CONFIG % "default" + "{serviceExternalIPs: [{cidr: 10.1.0.0/16}]}",
     "spec.serviceExternalIPs: advertising Kubernetes Services is not supported"),
    (CONFIG % "default" + "{nodeMeshPassword: {secretKeyRef: {name: s, key: k}}}",
     "spec.nodeMeshPassword: BGP passwords are not supported yet"),
    (CONFIG % "default" + "{nodeToNodeMeshEnabled: 'false'}",
     "spec.nodeToNodeMeshEnabled: 'false' is not true or false"),
    (CONFIG % "default" + "{logSeverityScreen: verbose}",
     "spec.logSeverityScreen: 'verbose' is not one of Debug, Info, Warning, Error, Fatal"),
    (CONFIG % "default" + "{listenPort: 0}",
     "spec.listenPort: 'listenPort': the port must be a number 1-65535"),
    (CONFIG % "global" + "{asNumber: 64512}",
     "BGPConfiguration global: metadata.name: is 'default' (the cluster's settings) or "
     "node.<nodename>"),
    (CONFIG % "node.host1" + "{asNumber: 64513}",
     "spec.asNumber: read only from the BGPConfiguration default"),
])
def test_refused_before_anything_is_written(cli, resources, manifest, message):
    # A valid peer first: nothing of the file is written when one object is bad.
    result = cli("apply", "-f", "-", stdin=BGP_MANIFEST + "---\n" + manifest + "\n")
    assert result.code == 1, result.out
    no_traceback(result)
    assert message in result.err
    assert result.out == ""
    assert resources.list("BGPPeer") == [] and resources.list("BGPConfiguration") == []
