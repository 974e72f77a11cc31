"""The agent's status files (policy, names, BIRD, the names watchdog's
health), which `calico-libnetwork status`, `check` and the metrics read:
JSON, replaced atomically so that a reader never sees half of one."""

import json
import logging
import os
import threading
import time

LOG = logging.getLogger(__name__)


def write_status(path: str, status: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    # Named by process: an agent and the watchdog it restarts never share one.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


class PacedStatus:
    """A status written at most once per `interval`: the newest is on disk
    at the latest `interval` after it was given (a timer writes it), so a
    stream of changes costs a file write per interval, not one per batch."""

    def __init__(self, path: str, interval: float = 0.5):
        self.path, self.interval = path, interval
        self._lock = threading.Lock()  # one writer of the file at a time
        self._pending: dict | None = None
        self._timer: threading.Timer | None = None
        self._written = float("-inf")  # when last written (monotonic)
        self._cancelled = False

    def write(self, status: dict) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._pending = status
            if self._timer is not None:
                return  # it writes the newest
            wait = self._written + self.interval - time.monotonic()
            if wait > 0:
                self._timer = threading.Timer(wait, self._flush)
                self._timer.daemon = True
                self._timer.start()
                return
        self._flush()

    def cancel(self) -> None:
        """Write nothing more, whatever is given after (the file is about to
        be removed)."""
        with self._lock:
            self._cancelled = True
            if self._timer is not None:
                self._timer.cancel()
            self._pending = self._timer = None

    def _flush(self) -> None:
        with self._lock:
            status, self._pending, self._timer = self._pending, None, None
            if status is None or self._cancelled:
                return
            self._written = time.monotonic()
            try:
                write_status(self.path, status)
            except OSError as exc:
                LOG.error("could not write %s: %s", self.path, exc)
