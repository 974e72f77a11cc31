"""A watch through etcd's JSON gateway (POST /v3/watch on a member's client
URL, which etcd 3.4 and later serve by default), read by the caller's own
thread from one socket.

Why not the gRPC client's watch: python3-etcd3 takes each event in a thread
of its own and hands it over through a queue, and gRPC's channel thread and
C core wake for each event too, about 0.3 ms of CPU per event in all.  Here
the events that arrive while the follower is busy, or waits for its
throttle's next turn, wait in the socket, and are read, parsed and handed
over as one batch: one wake-up per batch, not three threads' per event.

etcd's gRPC proxy does not serve the gateway (it answers 404): Etcd.watch_prefix
then watches through gRPC, as it does when a member's gateway refuses.
"""

import base64
import json
import re
import socket
import ssl
from binascii import a2b_base64  # base64.b64decode's work without its checks in Python
from collections.abc import Iterator
from typing import NamedTuple

from datastore.errors import DatastoreUnavailable, RevisionCompacted, WatchStalled

_READ = 256 * 1024
_HEADERS_MAX = 64 * 1024
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]+)[^\r\n]*\r\n")


class WatchEvent(NamedTuple):
    key: str
    value: bytes | None  # None for a delete
    mod_revision: int


class GatewayRefused(Exception):
    """The member answered, but its gateway does not serve this watch (not
    there, the TLS handshake refused, an error from behind it, or what it
    sends is not a watch response): the member's gRPC may still serve it.
    `absent`: the gateway is not there at all (the gRPC proxy), so there is
    no point in asking again."""

    def __init__(self, reason: str, absent: bool = False):
        super().__init__(reason)
        self.absent = absent


def open_watch(url: str, host: str, port: int, tls: ssl.SSLContext | None, prefix: str,
               range_end: bytes, start_revision: int, timeout: float) -> "GatewayWatch":
    """A watch on [prefix, range_end) from start_revision, created on the
    member at host:port.  OSError when the member cannot be reached,
    GatewayRefused when it answers but its gateway does not take the
    watch, DatastoreUnavailable with etcd's reason when the member does
    not (no leader)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=host)
            except ssl.SSLError as exc:
                raise GatewayRefused(f"TLS: {exc.reason or exc}") from None
        body = json.dumps({"create_request": {
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(range_end).decode(),
            "start_revision": str(start_revision)}}).encode()
        # hasleader, as gRPC metadata (the gateway forwards Grpc-Metadata-*):
        # a member cut off from its quorum ends the watch instead of holding it.
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sock.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: %s\r\n"
                     b"Content-Type: application/json\r\nGrpc-Metadata-hasleader: true\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (authority.encode(), len(body), body))
        watch = GatewayWatch(url, sock)
        watch.created()
        return watch
    except BaseException:
        sock.close()
        raise


class GatewayWatch:
    def __init__(self, url: str, sock: socket.socket):
        self.url, self.sock = url, sock
        self._raw = bytearray()  # as read: chunked transfer coding
        self._body = bytearray()  # chunks' data: messages, one per line
        self._pending: list[dict] | None = None  # read with the head
        self._closed = False

    def created(self) -> None:
        """Reads the response head and the watch's first messages; raises as
        batches() does when the first is not "created" (no leader, the start
        revision compacted)."""
        while b"\r\n\r\n" not in self._raw:
            if len(self._raw) > _HEADERS_MAX:
                raise GatewayRefused("an oversize HTTP response head")
            self._receive()
        head, _, rest = bytes(self._raw).partition(b"\r\n\r\n")
        self._raw[:] = rest
        status = head.split(b"\r\n", 1)[0].split(b" ", 2)
        code = status[1] if len(status) > 1 else b"?"
        if code != b"200":
            # An error's JSON (etcd's reason) or "404 page not found".
            raise GatewayRefused(f"HTTP {code.decode(errors='replace')}", absent=code == b"404")
        if b"chunked" not in head.lower():
            raise GatewayRefused("a watch response without chunked transfer coding")
        self._pending = self._messages()
        first = self._pending[0]
        self._events(first)  # raises etcd's reason, or GatewayRefused for no watch message
        if not first.get("result", {}).get("created"):
            raise GatewayRefused(f"a watch response that is not one: {str(first)[:200]}")

    def batches(self, idle_timeout: float) -> Iterator[list[WatchEvent]]:
        """Each batch: every event read by then (at least one), in revision
        order.  WatchStalled after idle_timeout without a byte;
        RevisionCompacted when the start revision is gone;
        DatastoreUnavailable when the watch ends (the member lost its leader
        or went away)."""
        self.sock.settimeout(idle_timeout)
        while True:
            batch = []
            try:
                for message in self._pending or self._messages():
                    batch += self._events(message)
            except DatastoreUnavailable:
                if batch:  # what came before the end was seen
                    yield batch
                raise
            self._pending = None
            if batch:
                yield batch

    def interrupt(self) -> None:
        """From another thread: the reader's next (or current) read fails."""
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Ends the watch (etcd drops it with the connection)."""
        self.interrupt()
        self.sock.close()

    def _events(self, message: dict) -> list[WatchEvent]:
        """The message's events; raises what it says instead (an error, the
        watch cancelled), GatewayRefused when it is no watch response."""
        try:
            if "error" in message:
                error = message["error"]
                raise DatastoreUnavailable(f"the etcd watch on {self.url} failed: "
                                           f"{error.get('message', error)}")
            result = message.get("result", {})
            if result.get("canceled"):
                if int(result.get("compact_revision", 0)):
                    raise RevisionCompacted(int(result["compact_revision"]))
                raise DatastoreUnavailable(f"etcd at {self.url} cancelled the watch: "
                                           f"{result.get('cancel_reason') or 'no reason given'}")
            return [WatchEvent(a2b_base64(e["kv"]["key"]).decode(),
                               None if e.get("type") == "DELETE"
                               else a2b_base64(e["kv"].get("value", "")),
                               int(e["kv"]["mod_revision"]))
                    for e in result.get("events", ())]
        except (AttributeError, KeyError, TypeError, ValueError):
            raise GatewayRefused(f"a watch message not as etcd's gateway sends them: "
                                 f"{str(message)[:200]}") from None

    def _messages(self) -> list[dict]:
        """The whole messages read so far, reading until there is one."""
        while True:
            self._dechunk()
            end = self._body.rfind(b"\n")
            if end >= 0:
                lines = self._body[:end].split(b"\n")
                del self._body[:end + 1]
                try:
                    # Decoded first: json.loads of bytes finds their encoding in Python.
                    messages = [json.loads(line.decode()) for line in lines if line.strip()]
                except ValueError:
                    raise GatewayRefused("a watch message that is not JSON") from None
                if messages:  # not blank lines alone
                    return messages
            self._receive()

    def _dechunk(self) -> None:
        raw, at = self._raw, 0
        while (size := _CHUNK_SIZE.match(raw, at)) is not None:
            length = int(size.group(1), 16)
            start = size.end()
            if length == 0:
                raise DatastoreUnavailable(f"etcd at {self.url} ended the watch")
            if len(raw) < start + length + 2:
                break
            self._body += raw[start:start + length]
            at = start + length + 2
        del raw[:at]

    def _receive(self) -> None:
        """Blocks for more (up to the socket's timeout), then takes all that
        has arrived meanwhile: a TCP socket's one read does, TLS hands over
        a record at a time."""
        try:
            data = self.sock.recv(_READ)
        except TimeoutError:
            raise WatchStalled(f"no watch event from {self.url} for "
                               f"{self.sock.gettimeout()}s") from None
        except OSError as exc:
            raise DatastoreUnavailable(f"the etcd watch on {self.url} failed: {exc}") from None
        if not data:
            raise DatastoreUnavailable(f"etcd at {self.url} closed the watch"
                                       + (" (closed here)" if self._closed else ""))
        self._raw += data
        if isinstance(self.sock, ssl.SSLSocket):
            timeout = self.sock.gettimeout()
            self.sock.setblocking(False)
            try:
                while data := self.sock.recv(_READ):
                    self._raw += data
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except OSError:
                pass  # the next blocking read reports it
            finally:
                self.sock.settimeout(timeout)
