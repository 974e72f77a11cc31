"""The agent's status files (policy, names, BIRD, the names watchdog's
health), which `calico-libnetwork status`, `check` and the metrics read:
JSON, replaced atomically so that a reader never sees half of one."""

import contextlib
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
    try:
        with open(tmp, "w") as f:
            json.dump(status, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class PacedStatus:
    """A status written at most once per `interval`: the newest is on disk
    at the latest `interval` after it was given (one writer thread writes
    it then), so a stream of changes costs a file write per interval, not
    one per batch, and no thread is started per write."""

    def __init__(self, path: str, interval: float = 0.5):
        self.path, self.interval = path, interval
        self._due = threading.Condition()  # one writer of the file at a time
        self._pending: dict | None = None
        self._written = float("-inf")  # when last written (monotonic)
        self._cancelled = False
        self._writer: threading.Thread | None = None  # started by the first deferred write

    def write(self, status: dict) -> None:
        with self._due:
            if self._cancelled:
                return
            idle, self._pending = self._pending is None, status
            if time.monotonic() >= self._written + self.interval:
                self._flush()
            elif self._writer is None:
                self._writer = threading.Thread(target=self._write_when_due, daemon=True,
                                                name=f"status {os.path.basename(self.path)}")
                self._writer.start()
            elif idle:  # else the writer waits for its time already
                self._due.notify()

    def cancel(self) -> None:
        """Write nothing more, whatever is given after (the file is about to
        be removed)."""
        with self._due:
            self._cancelled, self._pending = True, None
            self._due.notify()

    def _write_when_due(self) -> None:
        with self._due:
            while not self._cancelled:
                wait = None if self._pending is None else \
                    self._written + self.interval - time.monotonic()
                if wait is None or wait > 0:
                    self._due.wait(wait)
                else:
                    self._flush()

    def _flush(self) -> None:  # with self._due held
        status, self._pending = self._pending, None
        self._written = time.monotonic()
        try:
            write_status(self.path, status)
        except OSError as exc:
            LOG.error("could not write %s: %s", self.path, exc)
        except Exception:  # noqa: BLE001 - the writer thread must live on for the next one
            LOG.exception("could not write %s", self.path)
