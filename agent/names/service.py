"""Names across hosts in the node agent: the index (a View of its etcd
watch), the responder and its listeners, and the interception table.

Listeners, all on 169.254.1.1 (every container's gateway, an address of
each host-side cali veth):
- port 53, forwarding to the servers daemon.json `dns` lists after
  169.254.1.1, else to the host's nameservers: the server to name first in
  daemon.json `dns` on dockerd 28 and later, which asks the host's own
  nameservers from the host's namespace, where we cannot see the question;
- one port per IPv4, non-loopback nameserver of the host, forwarding to
  that one only: dockerd up to 27 asks these from inside the container, and
  the interception table sends those questions here.
"""

import json
import logging
import os

from agent.names import upstreams
from agent.names.index import NameIndex
from agent.names.intercept import Interception
from agent.names.responder import DNS_PORT, Listener, Responder
from agent.names.upstreams import GATEWAY
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)


class NameService:
    def __init__(self, status_path: str | None = None, resolv_conf: str = upstreams.RESOLV_CONF,
                 daemon_json: str = upstreams.DAEMON_JSON, upstream_port: int = DNS_PORT):
        self.status_path = status_path
        self.resolv_conf, self.daemon_json = resolv_conf, daemon_json
        self.upstream_port = upstream_port  # tests use another port than 53
        self.index = NameIndex()
        self.responder = None
        self.interception = Interception()
        self.status = {}

    def start(self) -> "NameService":
        servers = upstreams.nameservers(self.resolv_conf)
        listeners = []
        direct = tuple((s, self.upstream_port)
                       for s in upstreams.behind_gateway(self.daemon_json, self.resolv_conf))
        try:
            listeners.append(Listener(GATEWAY, DNS_PORT, direct).bind())
        except OSError as exc:
            LOG.warning("not answering on %s:%d (%s); names work only where dockerd asks "
                        "the host's nameservers from the container (dockerd 27 and older)",
                        GATEWAY, DNS_PORT, exc)
        redirects = {}
        for server in upstreams.intercepted(servers):
            listener = Listener(GATEWAY, 0, ((server, self.upstream_port),)).bind()
            listeners.append(listener)
            redirects[server] = listener.port
        self.responder = Responder(lambda: self.index.table).start(listeners)
        try:
            self.interception.program(redirects)
        except KernelError as exc:
            LOG.warning("containers' questions to %s are not intercepted yet: %s",
                        ", ".join(redirects) or "no nameserver", exc)  # keep() retries
        self.status = {"enabled": True, "nameservers": servers,
                       "listening": [f"{lst.address}:{lst.port}" for lst in listeners],
                       "intercepted": sorted(redirects) if self.interception.programmed
                       else []}
        LOG.info("names: answering on %s; intercepting questions to %s",
                 ", ".join(self.status["listening"]) or "nothing",
                 ", ".join(redirects) or "no nameserver")
        self._write_status()
        self.interception.keep(redirects, self._interception_changed)
        return self

    def _interception_changed(self, programmed: bool) -> None:
        self.status["intercepted"] = sorted(self.interception.redirects) if programmed else []
        self._write_status()

    def stop(self) -> None:
        self.interception.remove()
        if self.responder is not None:
            self.responder.stop()
            self.responder = None
        if self.status_path:
            try:
                os.unlink(self.status_path)
            except FileNotFoundError:
                pass

    def _write_status(self) -> None:
        if not self.status_path:
            return
        os.makedirs(os.path.dirname(self.status_path), mode=0o755, exist_ok=True)
        tmp = self.status_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.status, f)
        os.replace(tmp, self.status_path)
