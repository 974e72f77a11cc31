"""Fixtures for IPAM tests against the session's real etcd (tests/conftest.py)."""

import pytest

from ipam.allocator import Ipam


@pytest.fixture
def node_ipam(etcd_client, resources):
    """node_ipam(node) -> an Ipam for that node sharing the test's client."""
    return lambda node: Ipam(etcd_client, node, resources)
