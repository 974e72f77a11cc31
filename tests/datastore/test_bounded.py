"""The bounded dict behind the per-process hints (the driver's endpoints and
networks, IPAM's known handles) is shared by gunicorn's threads: evicting,
looking up and forgetting from many threads at once must never fail (it
did: two evictions of the same oldest key raised KeyError, which dockerd
showed as an internal error; so did a lookup racing with an eviction)."""

import threading

from datastore.bounded import BoundedDict
from tests.lab.common import in_parallel

THREADS, ROUNDS = 16, 2000


def hammer(work) -> list[Exception]:
    """work(worker, i) for ROUNDS i in each of THREADS threads started at
    once; the exceptions raised."""
    start, errors = threading.Barrier(THREADS), []

    def run(worker):
        start.wait()
        try:
            for i in range(ROUNDS):
                work(worker, i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    in_parallel(run, THREADS)
    return errors


def test_concurrent_remembering_at_the_limit():
    cache = BoundedDict(8)
    assert hammer(lambda worker, i: cache.put((worker, i), i)) == [] and len(cache) <= 8


def test_looking_up_and_forgetting_while_others_evict():
    cache = BoundedDict(8)

    def work(worker, i):
        key = i % 12
        if worker % 3 == 0:
            cache.put(key, i)
        elif worker % 3 == 1:
            cache.pop(key)
        else:
            cache.replace(key, lambda value: value + 1)
            cache.get(key)
    assert hammer(work) == [] and len(cache) <= 8


def test_the_oldest_entry_makes_room():
    cache = BoundedDict(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 3)  # already there: nothing goes
    assert (cache.get("a"), cache.get("b")) == (3, 2)
    cache.put("c", 4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 4)
    cache.replace("a", lambda value: value + 1)  # gone: stays gone
    assert cache.get("a") is None and cache.pop("b") == 2 and len(cache) == 1
