"""apply / create / get / delete of GlobalNetworkPolicies, and Profiles and
policies checked against what the agent enforces before anything is written."""

import json

from tests.cli.conftest import no_traceback

GNP_KEY = "/calico/resources/v3/projectcalico.org/globalnetworkpolicies/"

GNP = """
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: db
spec:
  order: 100
  selector: role == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: role == 'frontend'}
    destination: {ports: [5432, 22:59]}
"""

PROFILE = """
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: net1
spec:
  labelsToApply: {net1: ""}
"""


def test_apply_get_delete_global_network_policy(cli, resources, etcd_client, tmp_path):
    applied = cli("apply", "-f", "-", "-o", "json", stdin=GNP)
    assert applied.code == 0, applied.err
    assert applied.json() == [{"result": "created", "kind": "GlobalNetworkPolicy", "name": "db"}]
    assert applied.err == ""

    # Stored as calicoctl stores it: default.<name>, types filled in.
    stored = json.loads(etcd_client.get(GNP_KEY + "default.db").value)
    assert stored["metadata"]["name"] == "default.db"
    assert stored["spec"]["types"] == ["Ingress"]
    assert stored["spec"]["ingress"][0]["destination"]["ports"] == [5432, "22:59"]
    assert etcd_client.get(GNP_KEY + "db") is None

    assert cli("get", "gnp").out.split() == ["NAME", "db"]
    wide = cli("get", "globalnetworkpolicies", "-o", "wide").out.splitlines()
    assert wide[0].split() == ["NAME", "ORDER", "SELECTOR"]
    assert wide[1].split() == ["db", "100", "role", "==", "'db'"]
    shown = cli("get", "globalnetworkpolicy", "db", "-o", "json").json()
    assert shown["metadata"]["name"] == "db" and shown["spec"]["types"] == ["Ingress"]
    assert cli("get", "gnp", "default.db", "-o", "json").json() == shown
    listed = cli("get", "gnps", "-o", "yaml")
    assert "name: db\n" in listed.out and "default.db" not in listed.out

    # What get shows applies again unchanged; a change is an update in place.
    (tmp_path / "db.yaml").write_text(listed.out)
    again = cli("apply", "-f", tmp_path / "db.yaml", "-o", "json")
    assert again.code == 0, again.err
    assert again.json() == [{"result": "unchanged", "kind": "GlobalNetworkPolicy", "name": "db"}]
    updated = cli("apply", "-f", "-", stdin=GNP.replace("order: 100", "order: 50"))
    assert updated.code == 0
    assert updated.out.split()[3:6] == ["updated", "GlobalNetworkPolicy", "db"]
    assert resources.get("GlobalNetworkPolicy", "default.db").spec["order"] == 50
    exists = cli("create", "-f", "-", stdin=GNP)
    assert exists.code == 1 and "GlobalNetworkPolicy db already exists; use" in exists.err

    deleted = cli("delete", "gnp", "db", "-o", "json")
    assert deleted.code == 0, deleted.err
    assert deleted.json() == [{"result": "deleted", "kind": "GlobalNetworkPolicy", "name": "db"}]
    assert resources.list("GlobalNetworkPolicy") == []
    missing = cli("get", "gnp", "db")
    assert missing.code == 1 and "GlobalNetworkPolicy db not found" in missing.err
    assert cli("create", "-f", "-", stdin=GNP).code == 0
    assert cli("delete", "-f", "-", stdin=GNP).code == 0
    assert resources.list("GlobalNetworkPolicy") == []


def test_unsupported_field_refused_before_anything_is_written(cli, resources):
    bad = GNP.replace("  ingress:\n", "  doNotTrack: true\n  ingress:\n")
    result = cli("apply", "-f", "-", stdin=PROFILE + "---" + bad)
    assert result.code == 1
    no_traceback(result)
    assert "GlobalNetworkPolicy db: spec.applyOnForward: applyOnForward must be true" in result.err
    assert result.out == ""
    assert resources.list("Profile") == [] and resources.list("GlobalNetworkPolicy") == []

    named_port = GNP.replace("[5432, 22:59]", "[5432, postgres]")
    result = cli("create", "-f", "-", stdin=named_port)
    assert result.code == 1
    assert ("GlobalNetworkPolicy db: spec.ingress[0].destination.ports[1]: 'postgres' is a "
            "named port") in result.err
    assert resources.list("GlobalNetworkPolicy") == []


def test_action_is_case_sensitive(cli, resources):
    result = cli("apply", "-f", "-", stdin=GNP.replace("action: Allow", "action: allow"))
    assert result.code == 1
    no_traceback(result)
    assert ("spec.ingress[0].action: 'allow' is not an action; write 'Allow' (actions are "
            "case-sensitive)") in result.err
    assert resources.list("GlobalNetworkPolicy") == []


def test_profiles_are_checked_and_warned_about(cli, resources):
    labelled = PROFILE.replace("name: net1", "name: net1\n  labels: {team: blue}")
    result = cli("apply", "-f", "-", stdin=labelled)
    assert result.code == 0, result.err
    assert result.err == ("calico-libnetwork: warning: Profile net1: metadata.labels are not "
                          "inherited by endpoints; put the labels to give them in "
                          "spec.labelsToApply\n")
    assert resources.get("Profile", "net1").metadata["labels"] == {"team": "blue"}

    portless = labelled + "  ingress:\n  - {action: Allow, destination: {ports: [80]}}\n"
    result = cli("apply", "-f", "-", stdin=portless)
    assert result.code == 1
    assert "Profile net1: spec.ingress[0].destination.ports: ports need protocol" in result.err
    assert "ingress" not in resources.get("Profile", "net1").spec


FELIX_CONFIGURATION = """
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: node.test-node
spec:
  defaultEndpointToHostAction: {action}
  vxlanEnabled: true
"""


def test_felix_configuration_action_is_checked_before_anything_is_written(cli, resources):
    result = cli("apply", "-f", "-",
                 stdin=PROFILE + "---" + FELIX_CONFIGURATION.format(action="Allow"))
    assert result.code == 1
    no_traceback(result)
    assert ("FelixConfiguration node.test-node: spec.defaultEndpointToHostAction: 'Allow' is "
            "not Drop, Accept or Return") in result.err
    assert resources.list("Profile") == [] and resources.list("FelixConfiguration") == []
    # Any case, as Felix reads it; stored as given.
    assert cli("apply", "-f", "-", stdin=FELIX_CONFIGURATION.format(action="accept")).code == 0
    assert resources.get("FelixConfiguration", "node.test-node").spec == {
        "defaultEndpointToHostAction": "accept", "vxlanEnabled": True}


HOST_ENDPOINT = """
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: h1-eth0
  labels: {role: docker-host}
spec:
  node: test-node
  interfaceName: eth0
  expectedIPs: [10.0.0.11]
  profiles: [net1]
"""


def test_apply_get_delete_host_endpoint(cli, resources):
    applied = cli("apply", "-f", "-", stdin=HOST_ENDPOINT)
    assert applied.code == 0, applied.err
    stored = resources.get("HostEndpoint", "h1-eth0")
    assert (stored.labels, stored.spec["interfaceName"]) == ({"role": "docker-host"}, "eth0")
    got = cli("get", "hep", "-o", "wide")
    assert got.code == 0, got.err
    assert got.out.split("\n")[0].split() == ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"]
    assert got.out.split("\n")[1].split()[:3] == ["h1-eth0", "test-node", "eth0"]
    assert cli("delete", "heps", "h1-eth0").code == 0
    assert resources.list("HostEndpoint") == []


def test_a_host_endpoint_is_checked_before_anything_is_written(cli, resources):
    for line, instead, message in (
            ("  node: test-node\n", "", "spec.node: is required"),
            ("  interfaceName: eth0\n  expectedIPs: [10.0.0.11]\n", "",
             "spec: needs interfaceName"),
            ("[10.0.0.11]", "[10.0.0.1/24]", "spec.expectedIPs[0]: '10.0.0.1/24' is not an IP"),
            ("  profiles: [net1]\n", "  ports: [{name: ssh, port: 22, protocol: TCP}]\n",
             "spec.ports: named ports are not supported")):
        result = cli("apply", "-f", "-",
                     stdin=PROFILE + "---" + HOST_ENDPOINT.replace(line, instead))
        assert result.code == 1, line
        no_traceback(result)
        assert f"HostEndpoint h1-eth0: {message}" in result.err
        assert resources.list("Profile") == [] and resources.list("HostEndpoint") == []


def test_failsafe_ports_are_checked_before_anything_is_written(cli, resources):
    felix = """
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  failsafeInboundHostPorts: [{protocol: TCP, port: 22, net: 10.0.0.0/8}, {port: %s}]
"""
    result = cli("apply", "-f", "-", stdin=felix % "70000")
    assert result.code == 1
    assert ("FelixConfiguration default: spec.failsafeInboundHostPorts[1]: port 70000 is not "
            "a number 0-65535") in result.err
    assert resources.list("FelixConfiguration") == []
    assert cli("apply", "-f", "-", stdin=felix % "2379").code == 0
