"""Shared test setup: markers, a real etcd, and the lab's Docker host fixtures
(tests/lab/fixtures.py: docker_host, docker_host_factory)."""

import os
import shutil
import sys
from pathlib import Path

import pytest

# `tests.lab` must import the same way however pytest was started.
REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.lab import EtcdServer  # noqa: E402
from tests.lab.etcd import ETCD  # noqa: E402

pytest_plugins = ["tests.lab.fixtures"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts real daemons such as dockerd")
    config.addinivalue_line("markers", "require_root: skipped unless run as root")


def pytest_runtest_setup(item):
    if item.get_closest_marker("require_root") and os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(scope="session")
def etcd():
    """One etcd on 127.0.0.1 (free port) for the session: `etcd.endpoints`."""
    if not shutil.which(ETCD):
        pytest.skip(f"{ETCD} is not installed (scripts/deps.sh installs it)")
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_clean(etcd):
    """The session's etcd, running and empty."""
    if not etcd.running:  # a test may have stopped or killed it
        etcd.start()
    etcd.wipe()
    return etcd
