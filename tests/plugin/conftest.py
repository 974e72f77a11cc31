"""Fixtures for the plugin's HTTP tests (helpers in tests/plugin/support.py)."""

import pytest

from datastore.etcd import Etcd
from driver import dataplane
from tests.plugin.support import call


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
    monkeypatch.setattr(dataplane, "set_up_veth", lambda host, temp, v4=(), v6=(), mtu=None,
                        mac=None, proc_sys=None, published=False: made.append((host, temp, mac)))
    return made


@pytest.fixture
def round_trips(etcd_calls):
    """round_trips(client, path, body) -> (status, answer, etcd calls made);
    round_trips.made: (thread name, method) of each call made since."""
    def measure(client, path, body):
        etcd_calls.clear()
        status, answer = call(client, path, body)
        return status, answer, len(etcd_calls)
    measure.made = etcd_calls
    return measure
