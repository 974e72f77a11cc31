"""Bounded compare-and-swap retries, as libcalico-go's datastoreRetries."""

import random
import time

from datastore.errors import TooManyConflicts

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
            time.sleep(random.uniform(0, min(_MAX_BACKOFF, 0.001 * 2 ** attempt)))
        yield attempt
    raise TooManyConflicts(
        f"gave up {what} after {retries} attempts lost against concurrent "
        "writers; etcd is very busy or another client keeps changing the "
        "same records, try again")
