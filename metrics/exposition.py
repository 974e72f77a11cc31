"""The node's one metrics listener: bound once, served by whichever process
holds the figures, with the families of several sources merged.

Felix serves only /metrics; so does this (404 elsewhere).  A separate TCP
listener, not a route of the plugin's app: that one answers on root-only
unix sockets, and a TCP bind there would expose the plugin API too.
"""

import errno
import os
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (CollectorRegistry, ProcessCollector, disable_created_metrics,
                               make_wsgi_app)
from prometheus_client.multiprocess import MultiProcessCollector

VARIABLE = "CALICO_LIBNETWORK_PROMETHEUS_PORT"


class PortUnavailable(Exception):
    """The metrics port cannot be bound; the message names the variable."""


def listen(port: int) -> socket.socket:
    """A listening TCP socket on every address of the host (IPv6 too where
    the host has it); PortUnavailable when the port is taken."""
    try:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(("", port), family=socket.AF_INET6,
                                            dualstack_ipv6=True)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise
                # IPv6 off in this namespace (EADDRNOTAVAIL, EAFNOSUPPORT): IPv4 only.
        return socket.create_server(("", port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise PortUnavailable(f"{VARIABLE}: cannot listen on port {port} ({reason}); "
                              "choose a free port, or unset it to serve no metrics") from None


class Merged:
    """One collector over several, each metric family once: the agent's
    own figures and the plugin workers' files share names (the etcd
    counters, told apart by their component label), and the text format
    allows one TYPE line per name."""

    def __init__(self, *collectors):
        self.collectors = collectors

    def collect(self):
        families = {}
        for collector in self.collectors:
            for family in collector.collect():
                known = families.get(family.name)
                if known is None:
                    families[family.name] = family
                else:
                    known.samples.extend(family.samples)
        return list(families.values())


def serve_node(sock: socket.socket, own: CollectorRegistry, plugin_dir: str | None = None):
    """Serve this process's figures (`own`, to which its process_* are
    added) and, with `plugin_dir`, the plugin workers' multiprocess files."""
    disable_created_metrics()  # Calico's series have no _created twins
    ProcessCollector(registry=own)
    sources = [own]
    if plugin_dir is not None:
        sources.append(MultiProcessCollector(None, path=plugin_dir))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged(*sources))
    return serve(sock, registry)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, app):
        # The socket is bound already (by `run`, which may hand it on): no bind here.
        super().__init__(sock.getsockname()[:2], _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = "localhost", sock.getsockname()[1]
        self.setup_environ()
        self.set_app(app)


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds a connection may idle: a stalled client holds no thread for long

    def log_message(self, format, *args):  # noqa: A002 - a scrape is not worth a log line
        pass


def serve(sock: socket.socket, registry: CollectorRegistry) -> _Server:
    """Answer GET /metrics on `sock` from a daemon thread; shutdown() stops it."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"metrics are at /metrics\n"]
        return metrics(environ, start_response)

    server = _Server(sock, app)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
