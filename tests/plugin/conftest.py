import pytest

from datastore.etcd import Etcd


@pytest.fixture
def store(etcd_clean):
    """A datastore client on an empty etcd."""
    etcd = Etcd(etcd_clean.endpoints)
    yield etcd
    etcd.close()
