"""Ask a plugin socket what dockerd would: POST /Plugin.Activate."""

import http.client
import json
import socket

from plugin.app import CONTENT_TYPE


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def activate(path: str, timeout: float = 2.0) -> list[str]:
    """The interfaces the plugin on path implements; raises OSError (no such
    socket, refused, timed out) or ValueError (an answer that is not Docker's)."""
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("POST", "/Plugin.Activate", body=b"{}",
                     headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE})
        response = conn.getresponse()
        body = response.read()
    except http.client.HTTPException as exc:
        raise ValueError(f"not an HTTP answer ({exc!r})") from None
    finally:
        conn.close()
    if response.status != 200:
        raise ValueError(f"HTTP {response.status}")
    try:
        implements = json.loads(body)["Implements"]
    except (ValueError, KeyError, TypeError):
        raise ValueError("no Implements list in the answer") from None
    return list(implements)
