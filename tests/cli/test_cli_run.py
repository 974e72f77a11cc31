"""`calico-libnetwork run` as a process: start-up refusals, the sockets it
serves, a second instance, and a clean stop on SIGTERM."""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import EtcdServer
from tests.lab.common import in_netns, wait_until
from tests.lab.netns import Lab

REPO = str(Path(__file__).resolve().parents[2])
pytestmark = pytest.mark.require_root


def run_argv(plugin_dir, netns=None):
    return in_netns([sys.executable, "-m", "plugin.cli", "run", "--plugin-dir",
                     str(plugin_dir)], netns)


@pytest.fixture(scope="module")
def host():
    """A namespace with etcd in it: `run` changes the host's FORWARD chain and
    interfaces, which must not be this machine's."""
    with Lab() as lab:
        netns = lab.netns("run")
        with EtcdServer(netns=netns) as etcd:
            yield netns, etcd


def environment(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETCD", "CALICO", "NODENAME", "NO_DEFAULT"))}
    env.update(PYTHONPATH=REPO, NODENAME="run-test", CALICO_IPV4POOL_CIDR="10.99.0.0/16",
               IP="10.98.0.1/24")  # the namespace has no address to detect
    env.update(extra)
    return env


def activate(path) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def wait_for_sockets(paths, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"run exited: {process.stderr.read()}")
        if all(p.exists() for p in paths):
            return
        time.sleep(0.1)
    raise AssertionError("sockets did not appear")


@pytest.mark.parametrize("variable, value, message", [
    ("ETCD_ENDPOINTS", "not a url", "ETCD_ENDPOINTS"),
    ("CALICO_LIBNETWORK_VETH_MTU", "big", "CALICO_LIBNETWORK_VETH_MTU"),
    ("NODENAME", "Bad_Name", "NODENAME"),
    ("CALICO_LIBNETWORK_CREATE_PROFILES", "maybe", "CALICO_LIBNETWORK_CREATE_PROFILES"),
    ("CALICO_IPV4POOL_CIDR", "10.0.0.0", "CALICO_IPV4POOL_CIDR"),
])
def test_bad_configuration_stops_the_start(tmp_path, variable, value, message):
    result = subprocess.run(run_argv(tmp_path), env=environment(**{variable: value}),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "configuration error" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


POOLS = "/calico/resources/v3/projectcalico.org/ippools/"
CLUSTER_INFORMATION = "/calico/resources/v3/projectcalico.org/clusterinformations/default"


def test_without_etcd_it_serves_at_once_and_completes_its_start_when_etcd_answers(tmp_path,
                                                                                   host):
    """dockerd enables its plugins before it serves its API and gives up on
    one whose socket does not answer in time (moby#32815): without etcd,
    `run` prepares the kernel and serves, then writes ClusterInformation and
    the default pool once etcd answers."""
    netns, etcd = host
    etcd.ctl("del", "--prefix", POOLS)
    etcd.ctl("del", CLUSTER_INFORMATION)
    etcd.stop()
    paths = [tmp_path / "calico.sock", tmp_path / "calico-ipam.sock"]
    started = time.monotonic()
    process = subprocess.Popen(run_argv(tmp_path, netns) + ["--no-agent"],
                               env=environment(ETCD_ENDPOINTS=etcd.endpoints, ETCD_TIMEOUT="2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_sockets(paths, process)
        assert time.monotonic() - started < 15
        assert activate(paths[0]) == {"Implements": ["NetworkDriver", "IpamDriver"]}
        etcd.start()
        assert wait_until(lambda: etcd.get(POOLS + "default-ipv4-ippool") is not None, 40, 0.2)
        assert json.loads(etcd.get(CLUSTER_INFORMATION))["spec"]["datastoreReady"] is True
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
        etcd.start()
    assert "serving without etcd for now: cannot reach etcd at" in err
    assert "etcd answers: start-up complete" in err
    assert "Traceback" not in err


def test_serves_both_sockets_refuses_a_second_instance_and_stops_cleanly(tmp_path, host):
    netns, etcd = host
    env = environment(ETCD_ENDPOINTS=etcd.endpoints)
    paths = [tmp_path / "calico.sock", tmp_path / "calico-ipam.sock"]
    first = subprocess.Popen(run_argv(tmp_path, netns), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for_sockets(paths, first)
        for path in paths:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0  # root only
            assert activate(path) == {"Implements": ["NetworkDriver", "IpamDriver"]}
        assert wait_until(lambda: agent_children(first), 10), "run started no node agent"

        second = subprocess.run(run_argv(tmp_path, netns), env=env, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1
        assert "already serving" in second.stderr
        assert activate(paths[0])  # the first one is untouched

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        assert not any(p.exists() for p in paths)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_stale_socket_files_are_replaced(tmp_path, host):
    netns, etcd = host
    stale = tmp_path / "calico.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # a socket file nobody listens on any more
    process = subprocess.Popen(run_argv(tmp_path, netns),
                               env=environment(ETCD_ENDPOINTS=etcd.endpoints),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_sockets([stale, tmp_path / "calico-ipam.sock"], process)
        assert activate(stale)["Implements"]
    finally:
        process.terminate()
        process.wait(timeout=30)


ALIVE = "/calico/libnetwork/v1/nodes-alive/run-test"


def agent_children(process):
    return subprocess.run(["pgrep", "-P", str(process.pid), "-f", "plugin.cli agent"],
                          capture_output=True, text=True).stdout.split()


def test_one_socket_no_agent_and_every_default_pool_setting(tmp_path, host):
    """`run --socket calico.sock --no-agent` on a datastore without pools,
    with every CALICO_IPV4POOL_* and CALICO_IPV6POOL_* variable set: the
    pools carry them, only that socket is served, and no agent runs or
    registers the node (calico/node would)."""
    netns, etcd = host
    etcd.ctl("del", "--prefix", POOLS)
    env = environment(ETCD_ENDPOINTS=etcd.endpoints, NODENAME="run-no-agent",
                      CALICO_IPV4POOL_CIDR="10.97.0.0/16", CALICO_IPV4POOL_BLOCK_SIZE="28",
                      CALICO_IPV4POOL_NAT_OUTGOING="false", CALICO_IPV4POOL_IPIP="Never",
                      CALICO_IPV4POOL_VXLAN="CrossSubnet",
                      CALICO_IPV4POOL_NODE_SELECTOR="has(edge)",
                      CALICO_IPV6POOL_CIDR="fd97:1::/48", CALICO_IPV6POOL_BLOCK_SIZE="124",
                      CALICO_IPV6POOL_NAT_OUTGOING="true", CALICO_IPV6POOL_VXLAN="Always")
    process = subprocess.Popen(run_argv(tmp_path, netns) + ["--socket", "calico.sock",
                                                             "--no-agent"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_for_sockets([tmp_path / "calico.sock"], process)
        assert activate(tmp_path / "calico.sock")["Implements"]
        assert not (tmp_path / "calico-ipam.sock").exists()
        assert not wait_until(lambda: agent_children(process), 3)
        assert etcd.get("/calico/resources/v3/projectcalico.org/nodes/run-no-agent") is None
        assert json.loads(etcd.get(CLUSTER_INFORMATION))["spec"]["datastoreReady"] is True
        specs = {name: json.loads(etcd.get(POOLS + name))["spec"]
                 for name in ("default-ipv4-ippool", "default-ipv6-ippool")}
        v4, v6 = specs["default-ipv4-ippool"], specs["default-ipv6-ippool"]
        assert (v4["cidr"], v4["blockSize"], v4.get("natOutgoing", False), v4["ipipMode"],
                v4["vxlanMode"], v4["nodeSelector"]) == \
            ("10.97.0.0/16", 28, False, "Never", "CrossSubnet", "has(edge)")
        assert (v6["cidr"], v6["blockSize"], v6["natOutgoing"], v6["vxlanMode"]) == \
            ("fd97:1::/48", 124, True, "Always")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_start_registers_the_node_once_and_a_restarted_agent_again(tmp_path, host):
    """`run` registers the node (a clash stops it with its message) and its
    first agent does not do it again; an agent killed and restarted does, as
    the Node may have been deleted while it was down."""
    netns, etcd = host
    (tmp_path / "plugins").mkdir()
    log = tmp_path / "log"

    def registrations():
        return len(re.findall(r"(?:created|registered) Node run-test ", log.read_text()))

    def beat_since(moment):
        """An agent's heartbeat written after moment: it got past registering."""
        beat = etcd.get(ALIVE)
        return beat is not None and json.loads(beat)["time"] > moment
    started = time.time()
    with open(log, "w") as output:
        process = subprocess.Popen(run_argv(tmp_path / "plugins", netns),
                                   env=environment(ETCD_ENDPOINTS=etcd.endpoints),
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: beat_since(started), 60), log.read_text()
        assert registrations() == 1, log.read_text()
        assert json.loads(etcd.get(CLUSTER_INFORMATION))["spec"]["datastoreReady"] is True
        agent = agent_children(process)[0]
        os.kill(int(agent), signal.SIGKILL)
        assert wait_until(lambda: not running(agent), 10)
        killed = time.time()
        assert wait_until(lambda: beat_since(killed), 60), log.read_text()
        assert registrations() == 2, log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)


def running(pid: str) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_version():
    result = subprocess.run([sys.executable, "-m", "plugin.cli", "--version"],
                            env=environment(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("calico-libnetwork ")


def test_the_agent_process_imports_neither_the_web_server_nor_the_docker_client():
    """The agent lives as long as its host: its process (`run` starts it as
    `-m plugin.cli agent`) loads what it runs, not flask, gunicorn or docker."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "plugin.cli", "agent",
                             "--help"], env=environment(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0 and "run only the node agent" in result.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "agent.main" in imported
    assert not {"flask", "gunicorn", "docker", "plugin.server"} & imported
