"""Names across hosts in the node agent: the index (a View of its etcd
watch), the responder and its listeners, the watchdog that holds the
interception table, and the host's nameservers, followed while it runs.

Listeners:
- 169.254.1.1:53 (every container's gateway, an address of each host-side
  cali veth), forwarding to the servers daemon.json `dns` lists after
  169.254.1.1, else to the host's nameservers: the server to name first in
  daemon.json `dns` on dockerd 28 and later, which asks the host's own
  nameservers from the host's namespace, where we cannot see the question;
- one port per intercepted nameserver of the host (upstreams.intercepted),
  forwarding to that one only: dockerd up to 27 asks these from inside the
  container, and the interception table sends those questions here (IPv4
  ones on 169.254.1.1, IPv6 ones on `::`, reached as fe80::1).

Every FOLLOW_INTERVAL the host's resolv.conf and daemon.json are read
again: a nameserver added gets a listener and a redirect at once, and the
169.254.1.1 listener forwards to the new list; nothing restarts.  One
removed stays intercepted: dockerd gave it to the containers started
before, which keep asking it, and a redirect to the responder's port for
a nameserver forwards to that nameserver (its silence gets SERVFAIL, as
dockerd would have waited for nothing too).
"""

import logging
import os
import threading

from agent.names import upstreams
from agent.names.index import NameIndex
from agent.names.responder import DNS_PORT, Listener, Responder
from agent.names.upstreams import GATEWAY
from agent.names.watchdog_process import WATCHDOG_ARGV, WatchdogProcess
from agent.status_file import write_status

LOG = logging.getLogger(__name__)
FOLLOW_INTERVAL = 1.0  # seconds between reads of resolv.conf and daemon.json


class NameService:
    def __init__(self, status_path: str, health_path: str,
                 resolv_conf: str = upstreams.RESOLV_CONF,
                 daemon_json: str = upstreams.DAEMON_JSON, upstream_port: int = DNS_PORT,
                 follow_interval: float = FOLLOW_INTERVAL, watchdog_argv=WATCHDOG_ARGV):
        self.status_path, self.health_path = status_path, health_path
        self.resolv_conf, self.daemon_json = resolv_conf, daemon_json
        self.upstream_port = upstream_port  # tests use another port than 53
        self.follow_interval = follow_interval
        self.index = NameIndex()
        self.responder = None
        self.gateway = None  # the 169.254.1.1:53 listener, when it could bind
        self.intercepting = {}  # nameserver -> its Listener
        self.upstreams = None  # (nameservers, behind the gateway) as last read
        self.watchdog = WatchdogProcess(health_path, self._serve_probes, watchdog_argv)
        self.status = {}
        self._stop = threading.Event()
        self._thread = None

    def start(self) -> "NameService":
        self.responder = Responder(lambda: self.index.table).start([])
        try:
            self.gateway = Listener(GATEWAY, DNS_PORT, ()).bind()
            self.responder.add([self.gateway])
        except OSError as exc:
            LOG.warning("not answering on %s:%d (%s); names work only where dockerd asks "
                        "the host's nameservers from the container (dockerd 27 and older)",
                        GATEWAY, DNS_PORT, exc)
        redirects, fallback = self._follow(self._read())
        self.watchdog.start(redirects, fallback)
        self._thread = threading.Thread(target=self._keep_following, name="dns-upstreams",
                                         daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.watchdog.stop()  # the table first: no question is sent to a closed port
        if self.responder is not None:
            self.responder.stop()
            self.responder = None
        for path in (self.status_path, self.health_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def _serve_probes(self, sock) -> None:
        self.responder.serve_probes(sock)

    def _read(self) -> tuple[list[str], list[str]]:
        return (upstreams.nameservers(self.resolv_conf),
                upstreams.behind_gateway(self.daemon_json, self.resolv_conf))

    def _keep_following(self) -> None:
        while not self._stop.wait(self.follow_interval):
            found = self._read()
            if found == self.upstreams:
                continue
            LOG.info("the host's nameservers are now %s (169.254.1.1 forwards to %s)",
                     ", ".join(found[0]) or "none", ", ".join(found[1]) or "none")
            try:
                self.watchdog.intercept(*self._follow(found))
            except Exception:  # noqa: BLE001 - the next change tries again
                LOG.exception("could not follow the host's nameservers")

    def _follow(self, found: tuple[list[str], list[str]]) -> tuple[dict[str, int], str | None]:
        """Listen for the nameservers `found` too: (redirects, fallback) for
        the watchdog."""
        servers, behind = found
        if self.gateway is not None:  # read at each question: the next one goes there
            self.gateway.upstreams = tuple((s, self.upstream_port) for s in behind)
        added = []
        for server in upstreams.intercepted(servers):
            if server in self.intercepting:
                continue
            try:
                listener = Listener("::" if ":" in server else GATEWAY, 0,
                                    ((server, self.upstream_port),)).bind()
            except OSError as exc:
                LOG.error("cannot listen for questions to %s (%s): not intercepted", server, exc)
                continue
            self.intercepting[server] = listener
            added.append(listener)
        self.responder.add(added)
        self.upstreams = found
        redirects = {s: lst.port for s, lst in self.intercepting.items()}
        fallback = upstreams.fallback(behind)
        self.status = {"enabled": True, "nameservers": servers,
                       "listening": [_where(lst) for lst in ([self.gateway] if self.gateway
                                                             else [])
                                     + list(self.intercepting.values())],
                       "redirects": sorted(redirects)}
        LOG.info("names: answering on %s; intercepting questions to %s",
                 ", ".join(self.status["listening"]) or "nothing",
                 ", ".join(redirects) or "no nameserver")
        self._write_status()
        return redirects, fallback

    def _write_status(self) -> None:
        write_status(self.status_path, self.status)


def _where(listener: Listener) -> str:
    address = f"[{listener.address}]" if ":" in listener.address else listener.address
    return f"{address}:{listener.port}"
