"""The names watchdog: a child process of the agent that holds the
interception table (intercept.py) and takes it away while the responder
does not answer.

A stuck agent (SIGSTOP, a deadlock, a loop that never yields) would keep
its own table and cost every container's question dockerd's 4 s timeout,
external names included; and a stopped process stops all its threads, so
the watchdog cannot be one of them.  It is a process of its own, and owns
the table (nftables `owner`: it goes when the watchdog ends).  Every
PROBE_INTERVAL it sends a datagram over a socket pair to the responder's
event loop, which echoes it (responder._echo) from the loop that answers
the questions.  A probe not echoed for DEADLINE: the table is written `bypassed`, so
that questions go to their nameservers as without us; the first echo
after that puts the interception back.  The cost is one datagram each way
per PROBE_INTERVAL, and nothing on the network.

The agent (watchdog_process.py) writes the table's contents on the
watchdog's stdin, one JSON line each time they change ({"redirects":
{nameserver: port}, "fallback": nameserver}).  The end of stdin is the end
of the agent: the watchdog then ends, and the kernel drops the table.

    python -m agent.names.watchdog HEALTH_PATH PROBE_FD
"""

import json
import logging
import os
import selectors
import socket
import sys
import threading
import time

from agent.status_file import write_status
from agent.names.intercept import Interception
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

PROBE_INTERVAL = 0.1  # seconds between probes
DEADLINE = 0.5  # seconds a probe may wait for its echo before the interception goes


class Watchdog:
    def __init__(self, health_path: str, probes: socket.socket,
                 interception: Interception | None = None,
                 probe_interval: float = PROBE_INTERVAL, deadline: float = DEADLINE):
        self.health_path, self.probes = health_path, probes
        self.interception = interception or Interception()
        self.probe_interval, self.deadline = probe_interval, deadline
        self.answering = True  # until the first probe says otherwise
        self.since = time.time()
        self.withdrawals = 0
        self._lock = threading.Lock()  # the health file: this thread and the keeper's

    def run(self, commands) -> None:
        """Until `commands` (the agent's end of the pipe, a binary file)
        ends."""
        self.probes.setblocking(False)
        self.interception.keep(lambda programmed: self._write_health())
        selector = selectors.DefaultSelector()
        selector.register(commands, selectors.EVENT_READ, "commands")
        selector.register(self.probes, selectors.EVENT_READ, "probes")
        pending, sent = b"", 0
        waiting = None  # when the oldest probe not echoed yet went out
        next_probe = time.monotonic()
        try:
            while True:
                for key, _ in selector.select(max(0.0, next_probe - time.monotonic())):
                    if key.data == "probes":
                        echoes = self._drain()
                        if echoes is None:
                            return  # the agent's end is closed: the agent is gone
                        if echoes:
                            waiting = None
                            if not self.answering:
                                self._set_answering(True)
                        continue
                    data = os.read(commands.fileno(), 65536)
                    if not data:
                        return  # the agent is gone
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._configure(json.loads(line))
                now = time.monotonic()
                if now >= next_probe:
                    sent += 1
                    try:
                        self.probes.send(sent.to_bytes(8, "big"))
                    except (BlockingIOError, InterruptedError):
                        pass  # the responder reads nothing: the deadline tells
                    except OSError:  # its end is closed: the agent is gone
                        return
                    waiting = now if waiting is None else waiting
                    next_probe = now + self.probe_interval
                # Counted from a probe sent, not from the last echo: a watchdog
                # that was itself kept from running blames nobody.
                if self.answering and waiting is not None and now - waiting > self.deadline:
                    self._set_answering(False)
        finally:
            selector.close()
            self.interception.remove()

    def _drain(self) -> bool | None:
        """Read every echo waiting: whether there was any; None when the
        responder's end is closed."""
        got = False
        try:
            while True:
                if not self.probes.recv(64):
                    return None
                got = True
        except (BlockingIOError, InterruptedError):
            return got
        except OSError:
            return None

    def _configure(self, command: dict) -> None:
        try:
            self.interception.program(redirects=command["redirects"],
                                      fallback=command.get("fallback"))
        except KernelError:
            pass  # the keeper says it and tries again
        self._write_health()

    def _set_answering(self, answering: bool) -> None:
        self.answering, self.since = answering, time.time()
        if answering:
            LOG.warning("the DNS responder answers again: containers' questions to %s are "
                        "intercepted again", ", ".join(self.interception.redirects) or
                        "no nameserver")
        else:
            self.withdrawals += 1
            LOG.error("the DNS responder has not answered for %.1f s (agent stuck?): "
                      "containers' questions go straight to their nameservers until it does",
                      self.deadline)
        try:
            self.interception.program(bypassed=not answering)
        except KernelError:
            pass  # the keeper tries again
        self._write_health()

    def _write_health(self) -> None:
        with self._lock:
            icp = self.interception
            intercepted = sorted(icp.redirects) if icp.programmed and not icp.bypassed else []
            try:
                write_status(self.health_path, {
                    "pid": os.getpid(), "answering": self.answering, "since": self.since,
                    "intercepted": intercepted, "tableProgrammed": icp.programmed,
                    "fallback": icp.fallback if icp.bypassed else None,
                    "withdrawals": self.withdrawals})
            except OSError as exc:
                LOG.warning("cannot write %s: %s", self.health_path, exc)


def main(argv=None) -> int:
    health_path, fd = (argv or sys.argv)[1:3]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    probes = socket.socket(fileno=int(fd))
    try:
        Watchdog(health_path, probes).run(sys.stdin.buffer)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
