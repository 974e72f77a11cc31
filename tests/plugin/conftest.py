"""Fixtures for the plugin's HTTP tests (helpers in tests/plugin/support.py)."""

import pytest

from datastore.etcd import Etcd
from driver import dataplane


@pytest.fixture
def store(etcd_clean):
    """A datastore client on the session's etcd, emptied for the test."""
    etcd = Etcd(etcd_clean.endpoints)
    yield etcd
    etcd.close()


@pytest.fixture
def no_netlink(monkeypatch):
    """Join's veth and host routes, recorded instead of made: these tests run
    in pytest's own namespace, where no cali link may be left."""
    made = []
    monkeypatch.setattr(dataplane, "create_veth",
                        lambda host, temp, mtu=None, mac=None: made.append((host, temp, mac)) or 1)
    monkeypatch.setattr(dataplane, "program_host_side", lambda *args, **kwargs: None)
    return made
