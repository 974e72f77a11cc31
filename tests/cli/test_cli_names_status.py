"""status's Names line: when names cannot work on this dockerd, say what to set."""

import json
import os
import subprocess

from agent.settings import AgentSettings
from plugin.cli import names_check
from tests.fake_dockerd import DOCKER_20_10, DOCKER_28, FakeDockerd


def test_advice_per_dockerd():
    assert names_check.advice("20.10.24", []) is None  # asked from the container
    assert names_check.advice("27.5.1", []) is None
    assert names_check.advice(None, []) is None  # unknown: nothing to say
    assert names_check.advice("28.5.2", ["169.254.1.1", "10.0.0.53"]) is None
    text = names_check.advice("28.5.2", ["10.0.0.53"])
    assert '"dns": ["169.254.1.1"' in text and "/etc/docker/daemon.json" in text


def test_status_reads_the_agents_file_and_asks_dockerd(tmp_path):
    agent = AgentSettings(nodename="n1", run_dir=str(tmp_path))
    (tmp_path / "names-n1.json").write_text(json.dumps(
        {"listening": ["169.254.1.1:53", "169.254.1.1:40001"], "redirects": ["10.0.0.53"]}))
    (tmp_path / "names-health-n1.json").write_text(json.dumps(  # the watchdog's
        {"pid": os.getpid(), "answering": True, "intercepted": ["10.0.0.53"]}))
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"dns": ["10.0.0.53"]}')
    for versions, release, warned in ((DOCKER_20_10, "20.10.24", False),
                                      (DOCKER_28, "28.5.2", True)):
        with FakeDockerd(versions) as dockerd:
            dockerd.release = release
            status = names_check.names_status(agent, dockerd.url, str(daemon_json))
        assert status["dockerd"] == release
        assert bool(status["advice"]) == warned
        line = names_check.line(status)
        assert line.startswith("answering on 169.254.1.1:53, 169.254.1.1:40001; "
                               "questions to 10.0.0.53 intercepted")
        assert ("NOT reachable" in line) == warned


def test_off_and_not_running(tmp_path):
    off = AgentSettings(nodename="n1", names=False)
    assert names_check.line(names_check.names_status(off, "unix:///nowhere")) == \
        "off (CALICO_LIBNETWORK_DNS=false)"
    on = AgentSettings(nodename="n1", run_dir=str(tmp_path))
    status = names_check.names_status(on, f"unix://{tmp_path}/none.sock")
    assert "dockerdError" in status
    assert names_check.line(status) == "not answering yet (is the node agent running?)"


def test_dockerds_own_daemon_json_and_dns_flags():
    parse = names_check.parse_dockerd_argv
    assert parse(["dockerd"]) == ("/etc/docker/daemon.json", [])
    assert parse(["/usr/bin/dockerd", "-H", "fd://", "--config-file", "/lab/daemon.json"]) == \
        ("/lab/daemon.json", [])
    assert parse(["dockerd", "--config-file=conf/d.json", "--dns", "169.254.1.1",
                  "--dns=10.0.0.53"], cwd="/srv") == \
        ("/srv/conf/d.json", ["169.254.1.1", "10.0.0.53"])


def test_status_finds_the_dockerd_behind_the_socket(tmp_path, monkeypatch):
    with FakeDockerd(DOCKER_28) as dockerd:
        assert names_check._peer_pid(dockerd.url) == os.getpid()  # the process listening
        # This test's process is no dockerd, and none other runs: the default file.
        monkeypatch.setattr(names_check, "_pids", lambda: [])
        assert names_check.dockerd_dns_settings(dockerd.url) == ("/etc/docker/daemon.json", [])
        # A dockerd with --config-file: its file says what it gives containers.
        daemon_json = tmp_path / "daemon.json"
        daemon_json.write_text('{"dns": ["169.254.1.1", "10.0.0.53"]}')
        monkeypatch.setattr(names_check, "_comm", lambda pid: "dockerd")
        monkeypatch.setattr(names_check, "_argv_of", lambda pid: (
            ["dockerd", "--config-file", str(daemon_json)], "/"))
        dockerd.release = "28.5.2"
        agent = AgentSettings(nodename="n1", run_dir=str(tmp_path))
        status = names_check.names_status(agent, dockerd.url)
    assert status["daemonJson"] == str(daemon_json)
    assert status["daemonDns"] == ["169.254.1.1", "10.0.0.53"] and status["advice"] is None
    assert names_check._peer_pid(f"unix://{tmp_path}/none.sock") is None


def test_the_responders_health_from_the_watchdogs_file(tmp_path):
    agent = AgentSettings(nodename="n1", run_dir=str(tmp_path))
    (tmp_path / "names-n1.json").write_text(json.dumps(
        {"listening": ["169.254.1.1:53", "169.254.1.1:40001"], "redirects": ["10.0.0.53"]}))
    health = tmp_path / "names-health-n1.json"
    unix = f"unix://{tmp_path}/none.sock"
    status = names_check.names_status(agent, unix)
    assert status["responder"]["answering"] is None and status["intercepted"] == []
    health.write_text(json.dumps({"pid": os.getpid(), "answering": True, "since": 0,
                                  "intercepted": ["10.0.0.53"], "withdrawals": 0}))
    status = names_check.names_status(agent, unix)
    assert names_check.stuck(status) is None
    assert "questions to 10.0.0.53 intercepted" in names_check.line(status)
    health.write_text(json.dumps({"pid": os.getpid(), "answering": False, "since": 0,
                                  "intercepted": [], "withdrawals": 1}))
    status = names_check.names_status(agent, unix)
    assert status["responder"]["withdrawals"] == 1
    line = names_check.line(status)
    assert line.startswith("NOT ANSWERING: the agent's DNS responder has not answered since")
    assert "straight to their nameservers" in line
    # A watchdog that is gone (its agent killed) left its file: nothing is known.
    dead = subprocess.Popen(["true"])
    dead.wait()
    health.write_text(json.dumps({"pid": dead.pid, "answering": False, "since": 0,
                                  "intercepted": ["10.0.0.53"], "withdrawals": 1}))
    status = names_check.names_status(agent, unix)
    assert status["responder"]["answering"] is None and status["intercepted"] == []
    assert names_check.stuck(status) is None
