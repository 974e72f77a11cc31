"""The node agent as a child of `calico-libnetwork run`, restarted if it dies.

A separate process, not a thread: gRPC channels do not survive the fork of
gunicorn's workers, and a stuck agent must not stall the plugin sockets.
gunicorn's arbiter reaps every child it sees exit, ours included; Popen then
reports exit status 0, which is all we need to know (that it is gone).

An agent that dies at once is restarted after a delay that doubles up to
30 s; one that had run for HEALTHY_RUN seconds is restarted after the
first delay again (else an agent killed now and then, over weeks, would
come back only after 30 s each time).

`run` registers the node just before it starts the first agent, and tells
that one so (REGISTERED_FLAG): it does not register again.  A restarted
agent registers: the Node may have been deleted while it was down.

The agent runs as root: `-P` keeps the caller's working directory out of its
sys.path, so a `plugin/` (or `agent/`, `json.py`...) in whatever directory
`run` was started from is never imported in place of the installed package.
Not `-I`: that also drops PYTHONUNBUFFERED (the managed plugin's logs) and
PYTHONPATH, which the root environment that started `run` set for both.
"""

import logging
import subprocess
import sys
import threading
import time

from datastore.retry import Backoff

LOG = logging.getLogger(__name__)
AGENT_ARGV = [sys.executable, "-P", "-m", "plugin.cli", "agent"]
REGISTERED_FLAG = "--registered"  # the Node is registered: run did it just before
METRICS_FD_FLAG = "--metrics-fd"  # serve metrics on this inherited socket
PLUGIN_METRICS_FLAG = "--plugin-metrics"  # the plugin workers' metrics files are here
_RESTART_DELAYS = (1.0, 30.0)
HEALTHY_RUN = 10.0  # seconds an agent must have run for its restart to be prompt
_POLL = 1.0  # seconds between looks at the agent


class AgentProcess:
    def __init__(self, argv=AGENT_ARGV, registered=False, pass_fds=()):
        """registered: the caller has just registered the node, and the
        first agent is told so (REGISTERED_FLAG); a restarted one is not.
        pass_fds: descriptors every agent inherits (the metrics socket)."""
        self.argv = argv
        self.registered = registered
        self.pass_fds = tuple(pass_fds)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # no spawn after __exit__ has looked
        self._process = None
        self._thread = None

    def __enter__(self):
        self._thread = threading.Thread(target=self._supervise, name="agent-supervisor",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._stop.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=10)  # it sees the stop at once: nothing of it outlives us

    def _supervise(self):
        backoff = Backoff(*_RESTART_DELAYS)
        argv = [*self.argv, REGISTERED_FLAG] if self.registered else self.argv
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                self._process = subprocess.Popen(argv, pass_fds=self.pass_fds)
            argv = self.argv
            started = time.monotonic()
            while self._process.poll() is None and not self._stop.wait(_POLL):
                pass
            if self._stop.is_set():
                return
            if time.monotonic() - started >= HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next()
            LOG.warning("node agent exited (status %s); restarting in %.2g s",
                        self._process.returncode, delay)
            self._stop.wait(delay)
