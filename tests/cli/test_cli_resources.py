"""apply / create / get / delete with calicoctl v3 and v1 manifests."""

import pytest

from tests.cli.conftest import no_traceback

V3_MANIFEST = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.80.0.0/16
  natOutgoing: true
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata:
  name: net1
  labels: {team: blue}
spec:
  ingress:
  - action: Allow
    source: {selector: has(net1)}
    destination: {}
  egress:
  - {action: Allow, source: {}, destination: {}}
  labelsToApply: {net1: ""}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: host1
spec:
  bgp: {ipv4Address: 10.0.0.11/24}
"""

V1_POOL = """
apiVersion: v1
kind: ipPool
metadata:
  cidr: 10.81.0.0/16
spec:
  ipip:
    enabled: true
    mode: cross-subnet
  nat-outgoing: true
  disabled: false
"""

V1_PROFILE = """
- apiVersion: v1
  kind: profile
  metadata:
    name: Web_Net
    tags: [web]
    labels: {role: frontend}
  spec:
    ingress:
    - action: deny
      protocol: tcp
      source: {net: 10.0.20.7/24, tag: web}
      destination: {ports: [80]}
    - action: allow
      source: {tag: web, selector: "a == 'b'"}
    egress:
    - action: allow
"""


def test_apply_get_delete_v3(cli, resources, tmp_path):
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(V3_MANIFEST)
    applied = cli("apply", "-f", manifest, "-o", "json")
    assert applied.code == 0, applied.err
    assert [(o["result"], o["kind"], o["name"]) for o in applied.json()] == [
        ("created", "IPPool", "pool-a"), ("created", "Profile", "net1"),
        ("created", "Node", "host1")]

    # The pool went through ipam.pools: defaults applied.
    assert resources.get("IPPool", "pool-a").spec == {
        "cidr": "10.80.0.0/16", "vxlanMode": "Never", "ipipMode": "Never",
        "natOutgoing": True, "blockSize": 26, "nodeSelector": "all()"}
    assert resources.get("Profile", "net1").spec["labelsToApply"] == {"net1": ""}

    assert cli("get", "ippools").out.split() == ["NAME", "CIDR", "SELECTOR",
                                                 "pool-a", "10.80.0.0/16", "all()"]
    nodes = cli("get", "no", "-o", "wide").out.splitlines()
    assert nodes[0].split() == ["NAME", "ASN", "IPV4", "IPV6"]
    assert nodes[1].split() == ["host1", "10.0.0.11/24"]
    profile = cli("get", "profile", "net1", "-o", "json").json()
    assert profile["kind"] == "Profile" and profile["metadata"]["labels"] == {"team": "blue"}
    assert profile["metadata"]["resourceVersion"] == str(resources.get("Profile", "net1").revision)

    assert cli("apply", "-f", manifest, "-o", "json").json()[0]["result"] == "unchanged"
    deleted = cli("delete", "-f", manifest)
    assert deleted.code == 0, deleted.err
    assert [line.split()[0] for line in deleted.out.splitlines()[1:]] == ["deleted"] * 3
    for kind, name in (("IPPool", "pool-a"), ("Profile", "net1"), ("Node", "host1")):
        assert resources.get(kind, name) is None


@pytest.mark.parametrize("kind", ["ippool", "profiles", "nodes", "felixconfigurations"])
def test_get_yaml_and_json_round_trip(cli, resources, kind, tmp_path):
    cli("apply", "-f", "-", stdin=V3_MANIFEST)
    cli("pool", "create", "10.82.0.0/16", "--ipip-mode", "Always")  # + FelixConfiguration
    before = {(r.kind, r.name): r.to_dict(with_revision=True)
              for k in ("IPPool", "Profile", "Node", "FelixConfiguration")
              for r in resources.list(k)}
    for output in ("yaml", "json"):
        dumped = cli("get", kind, "-o", output)
        assert dumped.code == 0, dumped.err
        (tmp_path / output).write_text(dumped.out)
        again = cli("apply", "-f", tmp_path / output, "-o", "json")
        assert again.code == 0, again.err
        assert {o["result"] for o in again.json()} == {"unchanged"}
    after = {(r.kind, r.name): r.to_dict(with_revision=True)
             for k in ("IPPool", "Profile", "Node", "FelixConfiguration")
             for r in resources.list(k)}
    assert after == before


def test_apply_updates_and_keeps_identity(cli, resources):
    cli("apply", "-f", "-", stdin=V3_MANIFEST)
    before = resources.get("IPPool", "pool-a")
    changed = V3_MANIFEST.replace("natOutgoing: true", "natOutgoing: false\n  ipipMode: Always")
    result = cli("apply", "-f", "-", "-o", "json", stdin=changed)
    assert result.code == 0, result.err
    assert [o["result"] for o in result.json()] == ["updated", "unchanged", "unchanged"]
    after = resources.get("IPPool", "pool-a")
    assert after.spec["ipipMode"] == "Always" and "natOutgoing" not in after.spec
    assert after.metadata["uid"] == before.metadata["uid"]
    assert resources.get("FelixConfiguration", "default").spec == {"ipipEnabled": True}


def test_apply_refusals(cli, resources):
    cli("apply", "-f", "-", stdin=V3_MANIFEST)
    moved = cli("apply", "-f", "-", stdin=V3_MANIFEST.replace("10.80.0.0/16", "10.83.0.0/16"))
    assert moved.code == 1 and "cidr cannot change" in moved.err
    no_traceback(moved)
    stale = cli("apply", "-f", "-", stdin=V3_MANIFEST.replace(
        "name: net1", "name: net1\n  resourceVersion: '1'").replace("team: blue", "team: red"))
    assert stale.code == 1 and "has changed since resourceVersion 1" in stale.err
    assert "created" not in stale.out  # the pool before it was unchanged
    exists = cli("create", "-f", "-", stdin=V3_MANIFEST.split("---")[2])
    assert exists.code == 1 and "already exists; use `calico-libnetwork apply`" in exists.err
    overlap = cli("create", "-f", "-", stdin=V3_MANIFEST.split("---")[0].replace(
        "pool-a", "pool-b").replace("10.80.0.0/16", "10.80.3.0/24"))
    assert overlap.code == 1 and "overlaps IP pool pool-a" in overlap.err


@pytest.mark.parametrize("manifest, message", [
    ("kind: IPPool\nmetadata: {name: p}\n", "apiVersion None is not supported"),
    ("apiVersion: projectcalico.org/v3\nkind: Pod\nmetadata: {name: p}\n", "unknown kind 'Pod'"),
    ("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: Net_1}\n",
     "metadata.name 'Net_1' is not valid"),
    ("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: p, namespace: x}\n",
     "Profile is not namespaced"),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
     "spec: {cidr: 10.9.0.0/16, blockSize: '26'}\n", "spec.blockSize must be a number, not '26'"),
    ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\n"
     "spec: {cidr: 10.9.0.0/16, nat-outgoing: true}\n", "spec.nat-outgoing is a calicoctl v1"),
    ("apiVersion: v1\nkind: policy\nmetadata: {name: p}\n", "v1 kind 'policy' is not supported"),
    ("apiVersion: v1\nkind: ipPool\nmetadata: {}\n", "a v1 ipPool needs metadata.cidr"),
    ("a: [b\n", "cannot parse stdin as YAML"),
    ("- 1\n", "expected a resource"),
    ("---\n", "stdin holds no resources"),
])
def test_manifest_errors(cli, resources, manifest, message):
    result = cli("apply", "-f", "-", stdin=manifest)
    assert result.code == 1
    no_traceback(result)
    assert message in result.err
    assert resources.list("IPPool") == [] and resources.list("Profile") == []


def test_every_object_checked_before_any_is_written(cli, resources):
    bad_pool = V3_MANIFEST.split("---")[0].replace("pool-a", "pool-z").replace(
        "natOutgoing: true", "blockSize: 33")
    result = cli("apply", "-f", "-", stdin=V3_MANIFEST + "---" + bad_pool)
    assert result.code == 1
    no_traceback(result)
    assert "blockSize 33 is out of range" in result.err and result.out == ""
    assert resources.list("IPPool") == [] and resources.list("Profile") == []


def test_missing_file(cli, tmp_path):
    result = cli("apply", "-f", tmp_path / "nope.yaml")
    assert result.code == 1
    no_traceback(result)
    assert "cannot read" in result.err and "No such file" in result.err


def test_v1_ip_pool(cli, resources):
    result = cli("apply", "-f", "-", stdin=V1_POOL)
    assert result.code == 0, result.err
    pool = resources.get("IPPool", "10-81-0-0-16")  # named from the CIDR, as Calico's converter
    assert pool.spec == {"cidr": "10.81.0.0/16", "vxlanMode": "Never",
                         "ipipMode": "CrossSubnet", "natOutgoing": True, "blockSize": 26,
                         "nodeSelector": "all()"}
    assert resources.get("FelixConfiguration", "default").spec == {"ipipEnabled": True}
    always = V1_POOL.replace("10.81.", "10.84.").replace("    mode: cross-subnet\n", "")
    cli("apply", "-f", "-", stdin=always)
    assert resources.get("IPPool", "10-84-0-0-16").spec["ipipMode"] == "Always"
    assert cli("delete", "-f", "-", stdin=V1_POOL).code == 0
    assert resources.get("IPPool", "10-81-0-0-16") is None


def test_v1_profile(cli, resources):
    result = cli("create", "-f", "-", stdin=V1_PROFILE)
    assert result.code == 0, result.err
    (profile,) = resources.list("Profile")
    assert profile.name.startswith("web-net-")  # normalised, with a hash of "Web_Net"
    assert profile.spec == {
        "ingress": [
            {"action": "Deny", "protocol": "TCP",
             "source": {"nets": ["10.0.20.0/24"], "selector": "web == ''"},
             "destination": {"ports": [80]}},
            {"action": "Allow", "source": {"selector": "(a == 'b') && web == ''"},
             "destination": {}}],
        "egress": [{"action": "Allow", "source": {}, "destination": {}}],
        "labelsToApply": {"role": "frontend", "web": ""},
    }


def test_list_kind_and_aliases(cli, resources):
    listed = cli("get", "ipp", "-o", "yaml")
    assert listed.out.startswith("apiVersion: projectcalico.org/v3\nitems: []\nkind: IPPoolList")
    manifest = ("apiVersion: projectcalico.org/v3\nkind: List\nitems:\n"
                "- apiVersion: projectcalico.org/v3\n  kind: Profile\n  metadata: {name: p1}\n"
                "- apiVersion: projectcalico.org/v3\n  kind: Profile\n  metadata: {name: p2}\n")
    assert cli("apply", "-f", "-", stdin=manifest).code == 0
    assert cli("get", "pro").out.split() == ["NAME", "p1", "p2"]
    assert cli("delete", "pros", "p1").code == 0
    assert [r.name for r in resources.list("Profile")] == ["p2"]
    unknown = cli("get", "pods")
    assert unknown.code == 1 and "unknown resource type 'pods'" in unknown.err
    missing = cli("delete", "profile", "p1")
    assert missing.code == 1 and "Profile p1 not found" in missing.err
    usage = cli("delete", "profile")
    assert usage.code == 1 and "give either -f FILE or KIND NAME" in usage.err


def test_workload_endpoints_and_namespaces(cli, resources):
    wep = ("apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
           "metadata: {name: host1-libnetwork-libnetwork-ep1}\n"
           "spec: {node: host1, workload: libnetwork, orchestrator: libnetwork,\n"
           "       endpoint: ep1, ipNetworks: [10.80.0.5/32], interfaceName: caliep1}\n")
    assert cli("apply", "-f", "-", stdin=wep).code == 0
    assert cli("apply", "-f", "-", "-n", "other", stdin=wep).code == 0
    assert resources.get("WorkloadEndpoint", "host1-libnetwork-libnetwork-ep1", "libnetwork")
    table = cli("get", "weps").out.splitlines()
    assert table[0].split() == ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]
    assert table[1].split() == ["libnetwork", "host1", "10.80.0.5/32", "caliep1"]
    assert len(table) == 2
    everywhere = cli("get", "wep", "--all-namespaces").out.splitlines()
    assert [line.split()[0] for line in everywhere] == ["NAMESPACE", "libnetwork", "other"]
    one = cli("get", "wep", "host1-libnetwork-libnetwork-ep1", "-n", "other", "-o", "json")
    assert one.json()["metadata"]["namespace"] == "other"
    assert cli("delete", "wep", "host1-libnetwork-libnetwork-ep1", "-n", "other").code == 0
    assert resources.list("WorkloadEndpoint", "other") == []


def test_port_ranges_are_not_base_60_numbers(cli, resources):
    # YAML 1.1 reads an unquoted 22:59 as 22*60+59; calicoctl reads a range.
    manifest = ("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: ssh}\n"
                "spec:\n  ingress:\n  - action: Allow\n    protocol: TCP\n"
                "    destination: {ports: [22:59, 80, '100:200']}\n")
    assert cli("apply", "-f", "-", stdin=manifest).code == 0
    ports = resources.get("Profile", "ssh").spec["ingress"][0]["destination"]["ports"]
    assert ports == ["22:59", 80, "100:200"]
    shown = cli("get", "profile", "ssh", "-o", "yaml").out
    assert "- '22:59'" in shown  # quoted, so it reads back the same
