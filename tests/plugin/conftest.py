"""Fixtures for the plugin's HTTP tests (helpers in tests/plugin/support.py)."""

import pytest

from datastore.etcd import Etcd


@pytest.fixture
def store(etcd_clean):
    """A datastore client on the session's etcd, emptied for the test."""
    etcd = Etcd(etcd_clean.endpoints)
    yield etcd
    etcd.close()
