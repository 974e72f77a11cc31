"""Fixtures for IPAM tests against the session's real etcd (tests/conftest.py)."""

import pytest

from datastore.etcd import Etcd
from datastore.resources import Resources
from ipam.allocator import Ipam
from ipam.pools import build_pool, create_pool


@pytest.fixture
def etcd_client(etcd_clean):
    """An etcd client on an empty etcd; short timeout so outages show quickly."""
    client = Etcd(etcd_clean.endpoints, timeout=2)
    yield client
    client.close()


@pytest.fixture
def resources(etcd_client):
    return Resources(etcd_client)


@pytest.fixture
def make_pool(resources):
    def make(name, cidr, **options):
        return create_pool(resources, build_pool(name, cidr, **options))
    return make


@pytest.fixture
def node_ipam(etcd_client, resources):
    """node_ipam(node) -> an Ipam for that node sharing the test's client."""
    return lambda node: Ipam(etcd_client, node, resources)
