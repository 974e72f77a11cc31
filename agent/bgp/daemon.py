"""BIRD 2 run by the node agent: started once there is a config, restarted
if it dies, reconfigured through its control socket, stopped with the
agent.  Files live in $CALICO_LIBNETWORK_RUN_DIR/bird/ (bird.cfg, bird.ctl,
bird.pid, bird.log), so several nodes can share one machine.

Every start and restart happens in the one supervisor thread: BIRD is
started with PR_SET_PDEATHSIG, which fires when the *thread* that forked it
ends, so an agent killed outright takes its BIRD with it (BIRD's `persist`
leaves the routes in the kernel; `-R` recovers them on the next start).

Another BIRD in this network namespace (calico/node's, or the distro's
service) or another listener on the BGP port means two speakers would
fight over the routes: ours then does not start, says why in the log and
in the status file `status` reads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import threading
import time

from agent.bgp.control import ControlError, configure
from agent.status_file import write_status
from datastore.retry import Backoff
from kernel.processes import argv, in_this_netns

LOG = logging.getLogger(__name__)

BIRD = "bird"
RESTART_DELAYS = (0.5, 10.0)  # first and longest wait before a restart
HEALTHY_RUN = 30.0  # a BIRD that ran this long is restarted after the first delay again
_PR_SET_PDEATHSIG = 1
_TCP_LISTEN = "0A"


class BirdPaths:
    def __init__(self, run_dir: str):
        self.dir = os.path.join(run_dir, "bird")
        self.config = os.path.join(self.dir, "bird.cfg")
        self.socket = os.path.join(self.dir, "bird.ctl")
        self.pid = os.path.join(self.dir, "bird.pid")
        self.log = os.path.join(self.dir, "bird.log")
        self.status = os.path.join(self.dir, "status.json")


class BirdDaemon:
    def __init__(self, paths: BirdPaths, listen_port: int = 179, binary: str = BIRD):
        self.paths, self.listen_port, self.binary = paths, listen_port, binary
        self._stop = threading.Event()
        self._wake = threading.Event()  # a config was written
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.blocked: str | None = None  # why BIRD is not started
        self._status = {"backend": "bird", "bird": "waiting for a configuration"}

    # -- the view's side --------------------------------------------------

    def apply(self, text: str) -> bool:
        """Make `text` BIRD's configuration: checked with `bird -p`, written
        atomically, and BIRD reconfigured (or started).  Unchanged text
        does nothing.  False when BIRD refused it (the old one stays)."""
        try:
            with open(self.paths.config) as f:
                unchanged = f.read() == text
        except FileNotFoundError:
            unchanged = False
        if unchanged:  # as an earlier agent left it: BIRD may still have to start
            self._wake.set()
            return True
        os.makedirs(self.paths.dir, mode=0o755, exist_ok=True)
        staged = self.paths.config + ".new"
        with open(staged, "w") as f:
            f.write(text)
        check = subprocess.run([self.binary, "-p", "-c", staged], capture_output=True,
                               text=True)
        if check.returncode != 0:
            LOG.error("BIRD refuses the rendered configuration, keeping the last one: %s",
                      (check.stderr or check.stdout).strip())
            return False
        os.replace(staged, self.paths.config)
        with self._lock:
            running = self._process is not None and self._process.poll() is None
        if running:
            try:
                LOG.info("BIRD reconfigured: %s", configure(self.paths.socket,
                                                            self.paths.config))
            except ControlError as exc:  # starting up: it reads the new file anyway
                LOG.warning("could not reconfigure BIRD: %s", exc)
        self._wake.set()
        return True

    # -- supervision --------------------------------------------------------

    def start(self) -> BirdDaemon:
        self._thread = threading.Thread(target=self._supervise, name="bird", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread is not None:
            self._thread.join(timeout)
        self._write_status(bird="stopped")

    @property
    def pid(self) -> int | None:
        with self._lock:
            process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _supervise(self) -> None:
        backoff = Backoff(*RESTART_DELAYS)
        self._write_status()
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.is_set():
                return
            _end_orphan(self.paths)
            self.blocked = other_bird(self.paths, self.listen_port)
            if self.blocked:
                LOG.error("not starting BIRD: %s; BGP is left to it", self.blocked)
                self._write_status(bird="not started", reason=self.blocked)
                self._stop.wait(30.0)  # look again later: it may go away
                continue
            started = time.monotonic()
            try:
                process = self._spawn()
            except OSError as exc:
                LOG.error("cannot start BIRD: %s", exc)
                self._write_status(bird="not started", reason=str(exc))
                self._stop.wait(backoff.next())
                continue
            self._write_status(bird="running", pid=process.pid)
            code = process.wait()
            if self._stop.is_set():
                return
            if time.monotonic() - started > HEALTHY_RUN:
                backoff.reset()
            delay = backoff.next()
            LOG.error("BIRD exited with status %s (see %s); restarting in %.1f s",
                      code, self.paths.log, delay)
            self._write_status(bird="restarting", reason=f"exited with status {code}")
            self._stop.wait(delay)

    def _spawn(self) -> subprocess.Popen:
        with open(self.paths.log, "ab") as log:
            process = subprocess.Popen(
                [self.binary, "-f", "-R", "-c", self.paths.config, "-s", self.paths.socket,
                 "-P", self.paths.pid], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        with self._lock:
            self._process = process
        LOG.info("BIRD started (pid %d, config %s, socket %s)", process.pid,
                 self.paths.config, self.paths.socket)
        return process

    def _write_status(self, **fields) -> None:
        self._status = {"backend": "bird", "config": self.paths.config,
                        "socket": self.paths.socket, **fields} if fields else self._status
        try:
            write_status(self.paths.status, self._status)
        except OSError as exc:
            LOG.error("could not write %s: %s", self.paths.status, exc)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _end_orphan(paths: BirdPaths) -> None:
    """A BIRD left by an agent that was killed before PDEATHSIG existed for
    it (or whose pid file outlived a reboot): ours if its command line names
    our config."""
    pid = _pid_from(paths.pid)
    if pid and paths.config in argv(pid):
        LOG.warning("stopping the BIRD (pid %d) an earlier agent left running", pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                return
            time.sleep(0.1)


def other_bird(paths: BirdPaths, port: int) -> str | None:
    """Why a BGP speaker that is not ours owns this network namespace, or None."""
    for pid, command in in_this_netns():
        if os.path.basename(command[0]) in ("bird", "bird6") and paths.config not in command:
            return f"another BIRD (pid {pid}: {' '.join(command).strip()}) " \
                   "runs in this network namespace"
    if _listening(port):
        return f"something else listens on TCP port {port} (BGP)"
    return None


def _pid_from(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _listening(port: int) -> bool:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def installed(binary: str = BIRD) -> bool:
    return shutil.which(binary) is not None


def bgp_off(paths: BirdPaths, backend: str) -> None:
    """No BIRD of ours: the status file says so, whatever `status` reads."""
    try:
        write_status(paths.status, {"backend": backend, "bird": "off"})
    except OSError as exc:
        LOG.error("could not write %s: %s", paths.status, exc)
