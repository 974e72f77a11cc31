"""The Docker engine matrix: the end-to-end modules listed here run in lab
hosts (tests/lab), on whichever dockerd LAB_DOCKER picks, and carry the
`matrix` marker. scripts/test.sh runs the whole suite on Debian 12's dockerd
20.10, then `-m matrix` on each newer engine (LAB_DOCKER_MATRIX, default 26).
test_quickstart.py is not here: it runs the quick start on this machine
itself, on dockerd 20.10 and 28 whatever LAB_DOCKER says; nor is
test_crash_burst.py: three bursts of 24 containers take it 25-45 s; nor
test_etcd_cluster.py: three hosts, three etcd members and a lost quorum take
it about 2 minutes."""

from pathlib import Path

import pytest

from tests.e2e.managed_plugin import build_plugin_dir
from tests.lab.baseimage import BaseImageUnavailable
from tests.lab.fixtures import skip_unless_root

HERE = Path(__file__).parent
MATRIX = {"test_single_host.py", "test_multi_host.py", "test_no_default_route.py",
          "test_compose.py", "test_managed_plugin.py", "test_names.py", "test_ipv6_hosts.py",
          "test_upgrade.py", "test_spoofing.py", "test_host_protection.py", "test_swarm.py",
          "test_published_ports.py"}


def pytest_collection_modifyitems(items):
    # Called with every collected item, not only this folder's.
    for item in items:
        if item.path.parent == HERE and item.path.name in MATRIX:
            item.add_marker(pytest.mark.matrix)


@pytest.fixture(scope="session")
def plugin_build():
    """The managed plugin's directory (config.json + rootfs/), built once
    per session for every module that installs the plugin."""
    skip_unless_root()
    try:
        return build_plugin_dir()
    except BaseImageUnavailable as e:
        pytest.skip(f"no local Python base image: {e}")
