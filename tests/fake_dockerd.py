"""A fake dockerd on a unix socket, for the plugin's few calls into Docker's API.

It answers as dockerd does (moby daemon/server/middleware/version.go at
docker-v29.0.0): `GET /version` unversioned with ApiVersion and
MinAPIVersion; a versioned path below the minimum gets HTTP 400 "client
version X is too old. Minimum supported API version is Y, please upgrade
your client to a newer version", above the maximum "too new"; then
`/networks`, `/networks/<id>` and `/containers/<id>/json`.  `hang = True` makes it accept
requests and never answer, like dockerd while it starts (its API listener
exists before NewDaemon returns, but serves nothing).
"""

import json
import os
import re
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

# (ApiVersion, MinAPIVersion) of each engine: moby api/common.go (DefaultVersion,
# MinSupportedAPIVersion; MinVersion in api/common_unix.go at v20.10.24) and, for
# 29, daemon/config/config.go (MaxAPIVersion, defaultMinAPIVersion).
DOCKER_20_10 = ("1.41", "1.12")  # v20.10.24
DOCKER_26 = ("1.45", "1.24")  # v26.1.5
DOCKER_27 = ("1.46", "1.24")  # v27.0.1
DOCKER_28 = ("1.51", "1.24")  # v28.5.2
DOCKER_29_0 = ("1.52", "1.44")  # docker-v29.0.0: the first to refuse 1.41
DOCKER_29_7 = ("1.55", "1.40")  # docker-v29.7.2

_VERSIONED = re.compile(r"^/v(\d+\.\d+)(/.*)$")


def _version_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


class FakeDockerd:
    def __init__(self, versions=DOCKER_29_0):
        self.api_version, self.min_version = versions
        self.networks = {}  # id -> name
        self.containers = {}  # id -> Config ({"Labels": {...}})
        self.inspect = {}  # id -> more of `docker inspect` (Name, NetworkSettings)
        self.endpoints = {}  # network id -> {container id: endpoint id}
        self.addresses = {}  # endpoint id -> its IPv4Address in network inspect ("a.b.c.d/n")
        self.release = "fake"  # what /version calls Version
        self.hang = False
        self.requests = []  # (method, path) in arrival order
        self.connections = 0  # accepted so far
        self._dir = tempfile.mkdtemp(prefix="fake-dockerd-")
        self.socket_path = os.path.join(self._dir, "docker.sock")
        self.url = "unix://" + self.socket_path
        self._release = threading.Event()  # ends hung requests at stop
        self._server = None

    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                fake.connections += 1
                super().setup()

            def do_GET(self):  # noqa: N802 - http.server's name
                fake._answer(self)

            def log_message(self, *args):
                pass

        self._server = socketserver.ThreadingUnixStreamServer(self.socket_path, Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True,
                         name="fake-dockerd").start()
        return self

    def __exit__(self, *exc):
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        os.unlink(self.socket_path)
        os.rmdir(self._dir)

    def versions_asked(self) -> int:
        return sum(1 for _, path in self.requests if path == "/version")

    def _answer(self, handler):
        path = handler.path.split("?")[0]
        self.requests.append((handler.command, path))
        if self.hang:
            self._release.wait()
            return
        if path == "/version":
            return _send(handler, 200, {"ApiVersion": self.api_version,
                                        "MinAPIVersion": self.min_version,
                                        "Version": self.release, "Os": "linux"})
        match = _VERSIONED.match(path)
        if match:
            version, path = match.groups()
            if _version_key(version) < _version_key(self.min_version):
                return _send(handler, 400, {"message": (
                    f"client version {version} is too old. Minimum supported API version "
                    f"is {self.min_version}, please upgrade your client to a newer version")})
            if _version_key(version) > _version_key(self.api_version):
                return _send(handler, 400, {"message": (
                    f"client version {version} is too new. Maximum supported API version "
                    f"is {self.api_version}")})
        if path == "/version":  # versioned: docker-py's version()
            return _send(handler, 200, {"ApiVersion": self.api_version, "Os": "linux",
                                        "Version": self.release})
        parts = path.strip("/").split("/")
        if parts == ["networks"]:
            return _send(handler, 200, [{"Name": name, "Id": network_id, "Driver": "calico"}
                                        for network_id, name in self.networks.items()])
        if parts[0] == "networks" and len(parts) == 2:
            network_id = parts[1]
            if network_id not in self.networks:
                return _send(handler, 404, {"message": f"network {network_id} not found"})
            containers = {cid: {"Name": cid[:8], "EndpointID": eid,
                                "IPv4Address": self.addresses.get(eid, "")}
                          for cid, eid in self.endpoints.get(network_id, {}).items()}
            return _send(handler, 200, {"Name": self.networks[network_id], "Id": network_id,
                                        "Driver": "calico", "Containers": containers})
        if parts[0] == "containers" and len(parts) == 3 and parts[2] == "json":
            if parts[1] not in self.containers:
                return _send(handler, 404, {"message": f"No such container: {parts[1]}"})
            return _send(handler, 200, {"Id": parts[1], "Config": self.containers[parts[1]],
                                        **self.inspect.get(parts[1], {})})
        return _send(handler, 404, {"message": "page not found"})


def _send(handler, status, body):
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.send_header("Api-Version", "fake")
    handler.end_headers()
    handler.wfile.write(data)
