"""Two BIRDs run by the agent's BGP view and daemon, in two throw-away
namespaces, from records in a real etcd: the mesh session comes up, each
side programs the other's block into its kernel (proto bird, via the
other's address, never its own block), a killed BIRD is restarted and the
session comes back, a withdrawn block leaves the other kernel, and stopping
ends BIRD."""

import os
import subprocess

import pytest

from agent.bgp.control import ControlError, command
from agent.bgp.daemon import BirdDaemon, BirdPaths
from agent.bgp.view import BgpView
from datastore.etcd import Etcd
from datastore.follower import snapshot
from tests.agent.cluster import affinity_record, block_record, node_record, pool_record
from tests.lab import Lab
from tests.lab.common import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")

ADDRESSES = {"h1": ("10.0.0.1/24", "fd00:1::1/64"), "h2": ("10.0.0.2/24", "fd00:1::2/64")}
BLOCKS = {"h1": ("192.168.1.0/26", "fd10:0:0:1::/122"),
          "h2": ("192.168.2.0/26", "fd10:0:0:2::/122")}


class Host:
    """One node: its namespace, its BIRD (run in the namespace through a
    wrapper) and the BGP view that configures it."""

    def __init__(self, name, netns, run_dir, etcd):
        self.name, self.netns, self.etcd = name, netns, etcd
        wrapper = run_dir / "bird-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} bird "$@"\n')
        wrapper.chmod(0o755)
        self.paths = BirdPaths(str(run_dir))
        self.daemon = BirdDaemon(self.paths, binary=str(wrapper)).start()
        self.view = BgpView(name, self.daemon)

    def sync(self):
        snapshot(self.etcd, (self.view,))
        self.view.batch_done(True, True)

    def routes(self, version=4):
        return subprocess.run(["ip", f"-{version}", "-n", self.netns, "route", "show",
                               "proto", "bird"], capture_output=True, text=True,
                              check=True).stdout

    def established(self, protocol):
        try:
            rows = command(self.paths.socket, f"show protocols {protocol}")
        except ControlError:  # not started yet
            return False
        return any("Established" in text for _, text in rows)


@pytest.fixture
def hosts(etcd_clean, tmp_path):
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)
    for name, (address, address6) in ADDRESSES.items():
        key, value = node_record(name, address, address6=address6)
        etcd_clean.put(key, value.decode())
        for block in BLOCKS[name]:
            for key, value in (affinity_record(name, block), block_record(block, name)):
                etcd_clean.put(key, value.decode())
    for key, value in (pool_record("p4", "192.168.0.0/16"), pool_record("p6", "fd10::/48")):
        etcd_clean.put(key, value.decode())
    made = []
    with Lab() as lab:
        a, b = lab.netns("bgp-h1"), lab.netns("bgp-h2")
        lab.veth(a, "eth0", b, "eth0", "10.0.0.1/24", "10.0.0.2/24")
        for netns, address6 in ((a, "fd00:1::1/64"), (b, "fd00:1::2/64")):
            subprocess.run(["ip", "-n", netns, "addr", "add", address6, "dev", "eth0",
                            "nodad"], check=True)
        try:
            for name, netns in (("h1", a), ("h2", b)):
                (tmp_path / name).mkdir()
                made.append(Host(name, netns, tmp_path / name, etcd))
            yield etcd, made
        finally:
            for host in made:
                host.daemon.stop()
            etcd.close()


def test_two_birds_exchange_blocks(hosts):
    etcd, (h1, h2) = hosts
    for host in (h1, h2):
        host.sync()
    assert wait_until(lambda: h1.established("Mesh_10_0_0_2"), 20)
    assert wait_until(lambda: h2.established("Mesh_fd00_1__1"), 20)
    assert wait_until(lambda: "192.168.2.0/26 via 10.0.0.2 dev eth0" in h1.routes(), 10)
    assert wait_until(lambda: "192.168.1.0/26 via 10.0.0.1 dev eth0" in h2.routes(), 10)
    assert wait_until(lambda: "fd10:0:0:2::/122 via fd00:1::2 dev eth0" in h1.routes(6), 10)
    assert "192.168.1.0/26" not in h1.routes()  # its own block: never from BIRD
    assert "default" not in h1.routes()

    # A killed BIRD is back, with its session, within seconds.
    pid = h2.daemon.pid
    os.kill(pid, 9)
    assert wait_until(lambda: h2.daemon.pid not in (None, pid), 5)
    assert wait_until(lambda: h1.established("Mesh_10_0_0_2"), 20)

    # An unchanged config is not re-applied; a withdrawn block leaves the peer.
    mtime = os.stat(h2.paths.config).st_mtime_ns
    h2.sync()
    assert os.stat(h2.paths.config).st_mtime_ns == mtime
    etcd.delete(affinity_record("h2", "192.168.2.0/26")[0])
    h2.sync()
    assert wait_until(lambda: "192.168.2.0/26" not in h1.routes(), 10)
    assert h1.established("Mesh_10_0_0_2")  # reconfigured, the session kept

    pid = h1.daemon.pid
    h1.daemon.stop()
    assert h1.daemon.pid is None and not os.path.exists(f"/proc/{pid}")


def test_a_bird_already_in_the_namespace_keeps_ours_from_starting(tmp_path):
    """calico/node's (or the distro's) BIRD owns the host: ours says so."""
    config = tmp_path / "other.cfg"
    config.write_text("router id 10.9.9.9;\nprotocol device {}\n")
    with Lab() as lab:
        netns = lab.netns("bgp-taken")
        other = subprocess.Popen(["ip", "netns", "exec", netns, "bird", "-f", "-c",
                                  str(config), "-s", str(tmp_path / "other.ctl")])
        try:
            assert wait_until((tmp_path / "other.ctl").exists, 5)  # it runs
            code = ("import sys; from agent.bgp.daemon import BirdPaths, other_bird; "
                    f"print(other_bird(BirdPaths({str(tmp_path)!r}), 179))")
            out = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/env",
                                  f"PYTHONPATH={os.getcwd()}", os.sys.executable, "-c", code],
                                 capture_output=True, text=True, check=True).stdout
            assert other.poll() is None
            assert "another BIRD (pid" in out and "runs in this network namespace" in out
        finally:
            other.terminate()
            other.wait(5)
