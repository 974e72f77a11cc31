"""A client used after close() (a background thread still at work when the
plugin stopped) gets the typed DatastoreUnavailable, which callers handle,
not gRPC's bare ValueError, which killed the driver's name-learning thread."""

import pytest

from datastore.errors import DatastoreUnavailable
from datastore.etcd import Etcd


def test_a_closed_client_raises_datastore_unavailable(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=1.0)
    etcd.put("/calico/test/key", "value")
    etcd.close()
    with pytest.raises(DatastoreUnavailable, match="closed"):
        etcd.get("/calico/test/key")
    with pytest.raises(DatastoreUnavailable, match="closed"):
        etcd.update("/calico/test/key", "other", 1)
