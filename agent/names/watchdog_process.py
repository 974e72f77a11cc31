"""The names watchdog (watchdog.py) as a child of the agent, restarted if it
dies, and told what to intercept.

Each watchdog gets a socket pair of its own: one end passed to it, the
other echoed by the responder's loop.  What to intercept goes down its
stdin, one JSON line per change, and again in full to a restarted one.
The agent's end of that pipe is closed only by the agent's end (stop, or
the kernel at its death): the watchdog then ends, and its table with it.
"""

import json
import logging
import socket
import subprocess
import sys
import threading

LOG = logging.getLogger(__name__)
WATCHDOG_ARGV = [sys.executable, "-P", "-m", "agent.names.watchdog"]
RESTART_DELAY = 1.0  # seconds before a dead watchdog is replaced


class WatchdogProcess:
    def __init__(self, health_path: str, serve_probes, argv=WATCHDOG_ARGV):
        """serve_probes(sock): have the responder echo what arrives on sock."""
        self.health_path, self.serve_probes, self.argv = health_path, serve_probes, argv
        self.table = {"redirects": {}, "fallback": None}
        self.process = None
        self._lock = threading.Lock()  # the process and its pipe
        self._stop = threading.Event()
        self._thread = None

    def start(self, redirects: dict[str, int], fallback: str | None) -> "WatchdogProcess":
        self.table = {"redirects": dict(redirects), "fallback": fallback}
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name="dns-watchdog",
                                        daemon=True)
        self._thread.start()
        return self

    def intercept(self, redirects: dict[str, int], fallback: str | None) -> None:
        """Have the watchdog intercept questions to these nameservers now."""
        with self._lock:
            self.table = {"redirects": dict(redirects), "fallback": fallback}
            self._send()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            process, self.process = self.process, None
        if process is not None:
            process.stdin.close()  # its signal to remove the table and end
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread is not None:
            self._thread.join(5)

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with self._lock:
            if self._stop.is_set():  # stopped while it waited to restart
                ours.close()
                theirs.close()
                return
            try:
                self.process = subprocess.Popen([*self.argv, self.health_path,
                                                 str(theirs.fileno())],
                                                stdin=subprocess.PIPE, bufsize=0,
                                                pass_fds=(theirs.fileno(),))
            finally:
                theirs.close()
            self.serve_probes(ours)
            self._send()

    def _send(self) -> None:
        if self.process is None:
            return
        try:
            self.process.stdin.write(json.dumps(self.table).encode() + b"\n")
        except OSError as exc:  # it died: _supervise restarts it with the table
            LOG.debug("names watchdog: %s", exc)

    def _supervise(self) -> None:
        while not self._stop.is_set():
            process = self.process
            if process is None:
                return
            status = process.wait()
            if self._stop.wait(RESTART_DELAY):
                return
            LOG.error("the names watchdog exited (status %s): starting another", status)
            process.stdin.close()  # unbuffered: nothing left to write to the dead one
            self._spawn()
