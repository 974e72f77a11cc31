"""The NetworkDriver's per-process caches are shared by gunicorn's threads:
evicting from many threads at once must never fail (it did: two evictions
of the same oldest key raised KeyError, which dockerd showed as an internal
error)."""

import threading

from driver import network_driver
from tests.lab.common import in_parallel


def test_concurrent_remembering_at_the_limit(monkeypatch):
    monkeypatch.setattr(network_driver, "_CACHE_LIMIT", 8)
    cache, errors = {}, []
    start = threading.Barrier(16)

    def remember(worker):
        start.wait()
        try:
            for i in range(2000):
                network_driver._remember(cache, (worker, i), i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    in_parallel(remember, 16)
    assert errors == [] and len(cache) <= 8
