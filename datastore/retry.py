"""Retrying: bounded compare-and-swap retries (`attempts`, as libcalico-go's
datastoreRetries) and doubling waits for loops that wait for something
outside to come back (`Backoff`)."""

import random
import time

from datastore.errors import TooManyConflicts
from metrics import instruments

RETRIES = 100
_MAX_BACKOFF = 0.05  # seconds


def attempts(what: str, retries: int = RETRIES):
    """Yield attempt numbers 0, 1, ...; the caller breaks out on success.

    Sleeps a small random jitter before each retry so that writers that lost
    the same compare do not collide again in lockstep.  Raises
    TooManyConflicts when every attempt was used up.
    """
    for attempt in range(retries):
        if attempt:
            instruments.etcd_retry("conflict")
            time.sleep(random.uniform(0, min(_MAX_BACKOFF, 0.001 * 2 ** attempt)))
        yield attempt
    raise TooManyConflicts(
        f"gave up {what} after {retries} attempts lost against concurrent "
        "writers; etcd is very busy or another client keeps changing the "
        "same records, try again")


class Backoff:
    """Waits that double from `first` up to `longest`, for loops that retry
    until something outside comes back (etcd, a watch, dockerd, a child
    process); `reset()` after a success starts again from `first`."""

    def __init__(self, first: float, longest: float):
        self.first, self.longest = first, longest
        self.delay = first

    def next(self) -> float:
        """The wait to take now; the one after it is twice as long."""
        delay = self.delay
        self.delay = min(delay * 2, self.longest)
        return delay

    def reset(self) -> None:
        self.delay = self.first
