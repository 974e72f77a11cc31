"""Pytest fixtures for Docker hosts (loaded for all tests by tests/conftest.py).

    def test_ping(docker_host):              # one host, etcd inside it
        docker_host.start_process([...])     # e.g. the plugin
        docker_host.docker("run", "--rm", "busybox", "echo", "hi")

    def test_two(docker_host_factory):       # several hosts, one Lab
        h1, h2 = docker_host_factory(), docker_host_factory(etcd=False)
        docker_host_factory.lab.veth(h1.netns, "eth1", h2.netns, "eth1", ...)

    def test_members(etcd_cluster):          # three etcd members on loopback
        etcd_cluster.leader().kill()
"""

import os
import shutil

import pytest

from .common import run_all
from .dockerd import DOCKERD, DockerHost
from .etcd import ETCD, EtcdCluster
from .images import import_busybox
from .netns import Lab


def skip_unless_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, dockerd)")


class HostFactory:
    """make(name=None, etcd=True, **options) -> a started DockerHost with
    busybox imported and, if `etcd`, etcd on its 127.0.0.1:2379 (host.etcd);
    `options` go to DockerHost (e.g. daemon_config={"dns": [...]}).
    Hosts are numbered 1, 2, ... in order; all share `make.lab`, and all go
    away in close() (benches use it outside pytest)."""

    def __init__(self):
        self.lab = Lab()
        self.hosts = []

    def __call__(self, name=None, etcd=True, **options):
        index = len(self.hosts) + 1
        host = DockerHost(name or f"h{index}", index, self.lab, **options)
        self.hosts.append(host)
        host.start()
        import_busybox(host)
        if etcd:
            host.start_etcd()
        return host

    def close(self):
        run_all(*(host.close for host in reversed(self.hosts)), self.lab.close)


@pytest.fixture(scope="module")
def docker_host_factory():
    """A HostFactory for the module: its hosts go away at the module's end."""
    skip_unless_root()
    if not shutil.which(DOCKERD):
        pytest.skip(f"{DOCKERD} is not installed (scripts/deps.sh installs it)")
    make = HostFactory()
    try:
        yield make
    finally:
        make.close()


@pytest.fixture(scope="module")
def docker_host(docker_host_factory):
    """One started Docker host with busybox and etcd inside it (module-wide)."""
    return docker_host_factory()


@pytest.fixture(scope="module")
def etcd_cluster():
    """Three etcd members on loopback ports (tests/lab/etcd.py EtcdCluster),
    started, for the module: `etcd_cluster.endpoints` lists all three."""
    if not shutil.which(ETCD):
        pytest.skip(f"{ETCD} is not installed (scripts/deps.sh installs it)")
    with EtcdCluster() as cluster:
        yield cluster
