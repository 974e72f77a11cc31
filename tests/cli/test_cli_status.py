"""`status`: exit 0 only when etcd answers and the plugin sockets answer
Plugin.Activate; the real plugin server (gunicorn) serves them here.  The
policy line reads the node agent's status file, written here by the test."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from datastore.resources import Resource
from plugin.cli import probe
from plugin.server import socket_paths
from tests.cli.conftest import NODE
from tests.lab.common import wait_until

REPO = Path(__file__).resolve().parents[2]
SERVE = ("import sys; from plugin import server; from plugin.config import Config; "
         "server.serve(Config.from_env(), server.socket_paths(sys.argv[1]))")


def _answers(path):
    try:
        return bool(probe.activate(path, timeout=0.5))
    except (OSError, ValueError):
        return False


@pytest.fixture
def plugin_dir(cli, tmp_path):
    """A directory where the real plugin server answers on both sockets."""
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)], cwd=REPO,
                              env=dict(os.environ), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        if not wait_until(lambda: all(map(_answers, socket_paths(str(tmp_path)))), 20):
            server.kill()
            pytest.fail(f"the plugin server did not answer: {server.communicate()[1]}")
        yield tmp_path
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wep(name, node, ifname, ip):
    return Resource(kind="WorkloadEndpoint", name=name, namespace="libnetwork",
                    spec={"node": node, "interfaceName": ifname, "ipNetworks": [ip]})


def test_all_good(cli, plugin_dir, resources):
    resources.create(Resource(kind="Node", name=NODE, spec={"bgp": {"ipv4Address": "10.0.0.1/24"}}))
    resources.create(_wep("ours", NODE, "lo", "10.80.0.1/32"))  # lo: an interface that exists
    resources.create(_wep("theirs", "other-node", "calinothere", "10.80.0.2/32"))
    result = cli("status", "--plugin-dir", plugin_dir)
    assert result.code == 0, result.err
    assert result.err == ""
    assert "Status: healthy" in result.out and "10.0.0.1/24" in result.out
    report = cli("status", "--plugin-dir", plugin_dir, "-o", "json").json()
    # The tests' etcd is plain http: its warning only (tests/cli/test_cli_tls.py).
    assert report["healthy"] and report["problems"] == []
    assert report["warnings"] == report["etcd"]["warnings"] and \
        [w.split(":")[0] for w in report["warnings"]] == ["etcd at http"]
    assert report["node"] == {"name": NODE, "resource": True, "ipv4Address": "10.0.0.1/24",
                              "ipv6Address": None}
    assert [s["state"] for s in report["sockets"]] == ["answering", "answering"]
    assert report["sockets"][0]["implements"] == ["NetworkDriver", "IpamDriver"]
    assert report["workloadEndpoints"] == [{"name": "ours", "namespace": "libnetwork",
                                            "interface": "lo", "interfacePresent": True}]


def test_missing_interface_is_a_warning(cli, plugin_dir, resources):
    resources.create(_wep("gone", NODE, "calideadbeef0", "10.80.0.3/32"))
    result = cli("status", "--plugin-dir", plugin_dir, "-o", "json")
    assert result.code == 0
    assert result.json()["warnings"] == [
        "workload endpoint gone has no interface calideadbeef0 on this host",
        *result.json()["etcd"]["warnings"]]


def test_sockets_missing(cli, tmp_path):
    result = cli("status", "--plugin-dir", tmp_path)
    assert result.code == 1
    assert "Status: UNHEALTHY" in result.out
    assert f"plugin socket {tmp_path}/calico.sock does not exist; start the plugin" in result.err
    assert "Traceback" not in result.err


def test_only_the_named_socket(cli, tmp_path):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(str(tmp_path / "calico.sock"))  # a socket file no server listens on
    silent.close()
    result = cli("status", "--plugin-dir", tmp_path, "--socket", "calico.sock", "-o", "json")
    assert result.code == 1
    assert [(s["path"], s["state"]) for s in result.json()["sockets"]] == [
        (f"{tmp_path}/calico.sock", "not answering")]
    assert "Connection refused" in result.json()["sockets"][0]["error"]


def test_socket_not_answering(cli, tmp_path):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts, never answers
    silent.bind(str(tmp_path / "calico.sock"))
    silent.listen()
    try:
        report = cli("status", "--plugin-dir", tmp_path, "-o", "json")
    finally:
        silent.close()
    assert report.code == 1
    states = [s["state"] for s in report.json()["sockets"]]
    assert states == ["not answering", "missing"]
    assert "does not answer Plugin.Activate" in report.err


def test_etcd_down(cli, etcd_clean, plugin_dir):
    etcd_clean.kill()
    try:
        result = cli("status", "--plugin-dir", plugin_dir)
        report = cli("status", "--plugin-dir", plugin_dir, "-o", "json").json()
    finally:
        etcd_clean.restart()
    assert result.code == 1
    assert "etcd:" in result.out and "UNREACHABLE" in result.out
    assert "unhealthy: cannot reach etcd at" in result.err and "ETCD_ENDPOINTS" in result.err
    assert "Traceback" not in result.err
    assert report["etcd"]["reachable"] is False and not report["healthy"]
    assert [s["state"] for s in report["sockets"]] == ["answering", "answering"]


POLICY_STATUS = {"enabled": True, "endpoints": 3, "rules": 42, "sets": 6, "clusterEndpoints": 7,
                 "programmed": "2026-11-29T17:01:02+00:00", "milliseconds": 12.5,
                 "defaultEndpointToHostAction": {"value": "Accept",
                                                 "source": "FelixConfiguration node.test-node"},
                 "guarded": ["tcp 10.0.0.1:2379 (etcd)"], "hostEndpoints": ["*", "eth0"],
                 "calicoHosts": {"ipv4": 3, "ipv6": 2}, "encapsulation": ["ipip", "vxlan6"],
                 "failsafe": {"inbound": {"value": ["tcp:22"], "source": "default"},
                              "outbound": {"value": [],
                                           "source": "FELIX_FAILSAFEOUTBOUNDHOSTPORTS"}}}


def _policy_line(result):
    (line,) = [line for line in result.out.splitlines() if line.startswith("Policy:")]
    return " ".join(line.split())


def test_policy_enforced(cli, plugin_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "agent-run"
    run_dir.mkdir()
    (run_dir / f"policy-{NODE}.json").write_text(json.dumps(POLICY_STATUS))
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(run_dir))  # as the agent's
    result = cli("status", "--plugin-dir", plugin_dir)
    assert result.code == 0, result.err
    assert _policy_line(result) == ("Policy: enforced on 3 endpoints (42 rules, 6 sets), last "
                                    "programmed 2026-11-29T17:01:02+00:00 (12.5 ms); "
                                    "workloads to this host: Accept (from FelixConfiguration "
                                    "node.test-node)")
    assert "Closed to containers: tcp 10.0.0.1:2379 (etcd)" in " ".join(result.out.split())
    assert ("Host endpoints: *, eth0; failsafe inbound: tcp:22 (from default); failsafe "
            "outbound: none (from FELIX_FAILSAFEOUTBOUNDHOSTPORTS)") in " ".join(result.out.split())
    assert ("Tunnels: ipip, vxlan6 accepted only from the Calico hosts (3 IPv4, 2 IPv6 "
            "addresses)") in " ".join(result.out.split())
    report = cli("status", "--plugin-dir", plugin_dir, "-o", "json").json()
    assert report["policy"] == POLICY_STATUS and report["healthy"]


def test_policy_not_programmed_yet(cli, tmp_path):
    result = cli("status", "--plugin-dir", tmp_path)  # no sockets either: unhealthy
    assert _policy_line(result) == "Policy: not programmed yet (is the node agent running?)"
    report = cli("status", "--plugin-dir", tmp_path, "-o", "json").json()
    assert report["policy"] == {"enabled": True, "programmed": None}


def test_policy_off(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))  # no agent file
    monkeypatch.setenv("CALICO_LIBNETWORK_POLICY", "false")
    result = cli("status", "--plugin-dir", tmp_path)
    assert _policy_line(result) == ("Policy: off (CALICO_LIBNETWORK_POLICY=false; Felix "
                                    "enforces policy)")
    assert cli("status", "--plugin-dir", tmp_path, "-o", "json").json()["policy"] == {
        "enabled": False}


def test_policy_off_as_the_agent_says(cli, tmp_path, monkeypatch):
    """The agent runs with policy off; `status` is run without the variable."""
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))
    (tmp_path / f"policy-{NODE}.json").write_text('{"enabled": false}')
    assert _policy_line(cli("status", "--plugin-dir", tmp_path)) == (
        "Policy: off (CALICO_LIBNETWORK_POLICY=false; Felix enforces policy)")


def test_policy_status_unreadable(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path))
    (tmp_path / f"policy-{NODE}.json").write_text("{half")
    line = _policy_line(cli("status", "--plugin-dir", tmp_path))
    assert line.startswith(f"Policy: unknown (cannot read {tmp_path}/policy-{NODE}.json: ")
