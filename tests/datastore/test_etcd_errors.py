"""Failures the callers handle come as the typed DatastoreUnavailable: a
client used after close() (a background thread still at work when the
plugin stopped), not gRPC's bare ValueError, which killed the driver's
name-learning thread; a watch etcd does not confirm in time, not the
library's WatchTimedOut, which the follower logged as a bug."""

import os
import signal

import pytest

from datastore.errors import DatastoreUnavailable
from datastore.etcd import Etcd
from tests.lab import EtcdServer


def test_a_closed_client_raises_datastore_unavailable(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=1.0)
    etcd.put("/calico/test/key", "value")
    etcd.close()
    with pytest.raises(DatastoreUnavailable, match="closed"):
        etcd.get("/calico/test/key")
    with pytest.raises(DatastoreUnavailable, match="closed"):
        etcd.update("/calico/test/key", "other", 1)


def test_a_watch_etcd_does_not_confirm_in_time_raises_datastore_unavailable():
    with EtcdServer() as server:
        etcd = Etcd(server.endpoints, timeout=1.0)
        try:
            etcd.put("/calico/test/key", "value")  # connected before etcd stops answering
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                # Mostly "did not confirm the watch"; on a busy machine gRPC may
                # give up on the stopped etcd first, an outage as well.
                with pytest.raises(DatastoreUnavailable):
                    next(etcd.watch_prefix("/calico/test/", 1, idle_timeout=5))
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
        finally:
            etcd.close()
