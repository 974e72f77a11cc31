"""Tests of the test harness itself (tests/lab) against the real daemons."""

import glob
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.lab import DockerHost, EtcdServer, Lab, import_busybox
from tests.lab import common
from tests.lab.common import netns_path, pids_in_netns, pids_with_cmdline, wait_until


def assert_nothing_left(directory, netns=None):
    assert not Path(directory).exists()
    assert str(directory) not in Path("/proc/self/mountinfo").read_text()
    assert pids_with_cmdline(str(directory)) == []
    if netns:
        assert not os.path.exists(netns_path(netns))
        assert glob.glob(f"/sys/fs/cgroup/*/{netns}") == []


def test_etcd_put_get_wipe(etcd_clean):
    etcd_clean.put("/lab/a", "1")
    etcd_clean.put("/lab/b", "-2")
    assert etcd_clean.get("/lab/b") == "-2"
    etcd_clean.wipe()
    assert etcd_clean.ctl("get", "--prefix", "", "--keys-only").stdout.strip() == ""


def test_etcd_python_client(etcd_clean):
    etcd3 = pytest.importorskip("etcd3")
    client = etcd3.client(host=etcd_clean.host, port=etcd_clean.client_port)
    try:
        client.put("/lab/py", "yes")
        assert client.get("/lab/py")[0] == b"yes"
    finally:
        client.close()


def test_etcd_kill_and_restart_keep_data():
    server = EtcdServer()
    try:
        server.start()
        server.put("/lab/k", "v")
        server.kill()
        assert not server.running
        server.restart()
        assert server.get("/lab/k") == "v"
        server.stop()
        server.start()
        assert server.get("/lab/k") == "v"
    finally:
        server.close()
    assert not server.running
    assert_nothing_left(server.dir)


@pytest.mark.require_root
def test_veth_between_namespaces():
    with Lab() as lab:
        a, b = lab.netns("a"), lab.netns("b")
        lab.veth(a, "eth1", b, "eth1", "10.99.0.1/24", "10.99.0.2/24")
        ping = subprocess.run(common.in_netns(["busybox", "ping", "-c1", "-W2", "10.99.0.2"], a),
                              capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    assert not os.path.exists(netns_path(a)) and not os.path.exists(netns_path(b))


@pytest.mark.require_root
def test_etcd_inside_a_namespace():
    with Lab() as lab:
        netns = lab.netns("etcd")
        with EtcdServer(netns=netns) as server:
            server.put("/lab/ns", "ok")
            assert server.get("/lab/ns") == "ok"
            assert pids_in_netns(netns) == [server.process.pid]
    assert_nothing_left(server.dir, netns)


@pytest.mark.require_root
def test_sweep_removes_runs_whose_owner_died():
    run = secrets.token_hex(3)  # a run id like any other
    netns = f"{common.PREFIX}-{run}-x"
    directory = common.LAB_ROOT / run
    directory.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (directory / "owner").write_text(f"{gone.pid} 0")
    try:
        common.ip("netns", "add", netns)
        sleeper = subprocess.Popen(common.in_netns(["sleep", "600"], netns))
        common.sweep_leftovers()
        assert sleeper.wait(5) == -9
        assert_nothing_left(directory, netns)
    finally:
        common.sweep_run(run)


@pytest.mark.slow
@pytest.mark.require_root
def test_docker_host_runs_busybox_and_cleans_up():
    host = DockerHost("selftest", 250)
    try:
        host.start()
        import_busybox(host)
        import_busybox(host)  # idempotent
        hi = host.docker("run", "--rm", "busybox", "echo", "hi", check=True)
        assert hi.stdout == "hi\n"
        ping = host.docker("run", "--rm", "busybox", "ping", "-c1", "-W2", host.gateway)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # docker0 is in the lab namespace, not in the root one.
        host.run_in_netns(["ip", "link", "show", "docker0"])
        assert host.gateway not in subprocess.run(["ip", "-4", "addr"], capture_output=True,
                                                  text=True).stdout
        host.docker("run", "-d", "--name", "sleeper", "busybox", "sleep", "600", check=True)
        sleeper = host.start_process(["sleep", "600"])
        assert wait_until(lambda: sleeper.pid in pids_in_netns(host.netns), 5)
        host.restart()
        assert "busybox:latest" in host.docker("images", "--format",
                                               "{{.Repository}}:{{.Tag}}").stdout
        host.docker("start", "sleeper", check=True)  # left running for close()
    finally:
        host.close()
    assert not sleeper.running
    assert_nothing_left(host.dir, host.netns)


@pytest.mark.slow
def test_docker_host_fixture(docker_host):
    out = docker_host.client().containers.run("busybox", ["echo", "sdk"], remove=True)
    assert out == b"sdk\n"
    health = docker_host.run_in_netns(
        ["etcdctl", "--endpoints", docker_host.etcd.endpoints, "endpoint", "health"])
    assert "is healthy" in health.stdout + health.stderr
    assert docker_host.plugin_dir.is_dir()


@pytest.mark.slow
def test_host_answers_proxy_arp_for_169_254_1_1(docker_host):
    """What the plugin relies on: a container whose gateway is 169.254.1.1
    reaches the host through a proxy-ARP veth, thanks to the host's lab0
    default route (a plain namespace stands in for the container)."""
    with Lab() as lab:
        ctr = lab.netns("ctr")
        lab.veth(docker_host.netns, "calilab1", ctr, "eth0")
        docker_host.run_in_netns("echo 1 > /proc/sys/net/ipv4/conf/calilab1/proxy_arp")
        lab.route(docker_host.netns, "192.168.77.2/32", dev="calilab1")
        lab.addr(ctr, "eth0", "192.168.77.2/32")
        lab.route(ctr, "169.254.1.1", dev="eth0")
        lab.route(ctr, "default", via="169.254.1.1", dev="eth0")
        ping = subprocess.run(
            common.in_netns(["busybox", "ping", "-c1", "-W2", docker_host.lab_address], ctr),
            capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
