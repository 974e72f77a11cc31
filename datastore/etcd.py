"""etcd v3 access: the one place that talks to the etcd client library.

Every write goes through a compare-and-swap vocabulary (as in Calico's
libcalico-go etcdv3 backend): ``create`` (key must not exist), ``update``
(key's mod_revision must match), ``delete`` (optionally revision-checked).
A lost compare is a ``None``/``False`` result, not an exception: callers
re-read and retry.  Unreachable etcd raises ``DatastoreUnavailable`` naming
the endpoints tried, within ``timeout`` seconds per endpoint; a cluster that
lost its quorum raises ``QuorumLost`` within ``timeout``; a TLS failure
(a certificate refused or not trusted, a bad CA, certificate or key file)
raises ``EtcdTlsError`` at once, naming the file and its variable to check.
"""

import json
import logging
import os
import queue
import ssl
import threading
import time
import types
import weakref
from collections.abc import Iterator
from typing import NamedTuple
from urllib.parse import urlsplit

# gRPC's C core logs a failed TLS handshake to stderr in its own words
# ("Corruption detected", "Decryption error") ahead of our message, which
# says what is wrong; GRPC_VERBOSITY=ERROR (or DEBUG) brings them back.
# Set before grpc is first imported, which is here.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import etcd3  # noqa: E402
import etcd3.events
import etcd3.exceptions
import etcd3.utils
import etcd3.watch
import grpc

from datastore import gateway
from datastore.errors import (DatastoreError, DatastoreUnavailable, EtcdTlsError, QuorumLost,
                              RevisionCompacted, WatchStalled)
from datastore.gateway import GatewayWatch, WatchEvent
from metrics import instruments

LOG = logging.getLogger(__name__)

# python3-etcd3 0.13.0 dropped its `six` import but still calls
# six.itervalues() when a watch stream fails; without this the watcher thread
# dies with NameError and watch callbacks are never told etcd went away.
etcd3.watch.six = types.SimpleNamespace(itervalues=lambda d: iter(d.values()))

_UNAVAILABLE = (
    etcd3.exceptions.ConnectionFailedError,
    etcd3.exceptions.ConnectionTimeoutError,
    etcd3.exceptions.InternalServerError,
    etcd3.exceptions.NoServerAvailableError,
)
_PAGE = 500
_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # gRPC backs off reconnecting up to 2 minutes by default: after an etcd
    # outage we want to be back within a second of etcd.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Only "could not connect" is retried: the request was not applied.  A timeout
# may have been applied, and a CAS caller must re-read instead.  A member
# without a leader ("no leader", below) refuses before applying anything.
_RETRYABLE = (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.NoServerAvailableError)
# Sent with every request and watch (etcd's clientv3.WithRequireLeader): a
# member cut off from its cluster's quorum then refuses at once with "no
# leader", and cancels our watches, instead of holding a request until the
# deadline or keeping a watch open that never sees another event.
_REQUIRE_LEADER = (("hasleader", "true"),)
_NO_LEADER = "etcdserver: no leader"


class TlsFiles(NamedTuple):
    """The TLS files, each shown with the variable that sets it (plugin/config.py)."""
    ca: str | None
    cert: str | None
    key: str | None

    def show(self, *which) -> str:
        names = {"ca": "ETCD_CA_CERT_FILE", "cert": "ETCD_CERT_FILE", "key": "ETCD_KEY_FILE"}
        return ", ".join(f"{names[w]}={getattr(self, w) or '(not set)'}"
                         for w in which or ("ca", "cert", "key"))


# What gRPC's error text says when etcd refused our client certificate (or
# wanted one): with TLS 1.3 etcd's alert arrives after the handshake and
# gRPC reports it as data it cannot decrypt.
_CLIENT_CERT_REFUSED = ("TSI_DATA_CORRUPTED", "BAD_CERTIFICATE", "CERTIFICATE_REQUIRED",
                        "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")


class KV(NamedTuple):
    key: str
    value: bytes
    mod_revision: int

    def json(self):
        return json.loads(self.value)


class Commit(NamedTuple):
    """What Etcd.commit did: the new revision, or None when a compare failed
    (then `reads` holds the read_back keys as they are now, None if absent)."""
    revision: int | None
    reads: dict[str, "KV | None"]

    def __bool__(self):
        return self.revision is not None


def _parse_endpoint(url: str):
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad etcd endpoint {url!r}: expected http(s)://host:port")
    return parts.scheme == "https", parts.hostname, parts.port or 2379


class Etcd:
    """A small etcd v3 client with failover across endpoints.

    Thread-safe for concurrent requests.  Create it after fork: gRPC channels
    do not survive fork.
    """

    def __init__(self, endpoints, ca_cert=None, cert=None, key=None, timeout=3.0):
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.tls = TlsFiles(ca_cert, cert, key)
        creds = self._ssl = None
        if any(_parse_endpoint(e)[0] for e in self.endpoints):
            self._ssl = _ssl_context(self.tls)
            creds = grpc.ssl_channel_credentials(
                *(_read(p) for p in (self.tls.ca, self.tls.key, self.tls.cert)))
        self._clients = []
        for url in self.endpoints:
            secure, host, port = _parse_endpoint(url)
            # time_retry=0: the library would otherwise refuse to use an
            # endpoint for 5 minutes after one failure; we fail over ourselves.
            ep = etcd3.Endpoint(host, port, secure=secure,
                                creds=creds if secure else None,
                                time_retry=0, opts=_GRPC_OPTIONS)
            client = etcd3.MultiEndpointEtcd3Client([ep], timeout=timeout)
            client.metadata = _REQUIRE_LEADER  # the library's slot for call metadata
            self._clients.append(client)
        self._current = 0
        self._closed = False
        self._no_gateway: set[int] = set()  # members whose JSON gateway is absent (a proxy)
        self._watches = weakref.WeakSet()  # open gateway watches, ended by close()

    # -- plumbing -------------------------------------------------------

    def _call(self, op: str, fn):
        """Run fn(client) on the current endpoint, failing over on outage and
        retrying refused connections until `timeout` has passed.  `op`: the
        kind of request, as the metrics count it (instruments.ETCD_OPS)."""
        deadline = time.monotonic() + self.timeout
        attempts = 0
        while True:
            errors, tls_errors, retryable, leaderless = [], [], True, []
            n = len(self._clients)
            start = self._current
            for i in range(n):
                idx = (start + i) % n
                instruments.etcd_request(op)
                if attempts:
                    instruments.etcd_retry("unavailable")
                attempts += 1
                try:
                    result = fn(self._clients[idx])
                except _UNAVAILABLE as exc:
                    tls = self._tls_failure(self.endpoints[idx], exc)
                    if tls:  # a file to fix: retrying will not help
                        tls_errors.append(tls)
                        retryable = False
                        continue
                    if _NO_LEADER in _grpc_details(exc):  # an election, or no quorum
                        leaderless.append(self.endpoints[idx])
                        errors.append(f"{self.endpoints[idx]} (no leader)")
                        continue
                    errors.append(f"{self.endpoints[idx]} ({type(exc).__name__}"
                                  f"{_plain_http_hint(self.endpoints[idx], exc)})")
                    retryable = retryable and isinstance(exc, _RETRYABLE)
                    continue
                except ValueError as exc:
                    if not self._closed:
                        raise
                    # gRPC's answer on a closed channel, to a thread still at
                    # work when its owner stopped: a typed error like any outage.
                    raise DatastoreUnavailable("the etcd client is closed") from exc
                except grpc.RpcError as exc:  # anything the library doesn't map
                    errors.append(f"{self.endpoints[idx]} ({exc.code().name})")
                    retryable = False
                    continue
                self._current = idx
                return result
            if not retryable or time.monotonic() + 0.2 > deadline:
                break
            time.sleep(0.2)
        if tls_errors:
            raise EtcdTlsError("; ".join(
                tls_errors + ([f"cannot reach etcd at {', '.join(errors)}"] if errors else [])))
        if leaderless:
            raise QuorumLost(
                f"the etcd cluster has no leader for {self.timeout:g} s: it has lost its "
                "quorum (more than half of its members are down or cut off from the "
                f"others); etcd at {', '.join(errors)}; it serves again as soon as a "
                "majority of its members is back")
        raise DatastoreUnavailable(
            "cannot reach etcd at " + ", ".join(errors)
            + "; check ETCD_ENDPOINTS and that etcd is running"
        )

    def _tls_failure(self, url: str, exc: Exception) -> str | None:
        """What is wrong, naming the file to check, when `exc` (from an
        https endpoint) is a failed TLS handshake; else None."""
        secure, host, _ = _parse_endpoint(url)
        details = _grpc_details(exc)
        if not secure or not details:
            return None
        if any(s in details for s in _CLIENT_CERT_REFUSED):
            if self.tls.cert:
                why = (f"it did not accept our client certificate ({self.tls.show('cert', 'key')});"
                       " is that certificate signed by a CA in etcd's --trusted-ca-file?")
            else:
                why = ("it requires a client certificate and none is configured: set "
                       "ETCD_CERT_FILE and ETCD_KEY_FILE")
            return f"etcd at {url} refused the TLS handshake: {why}"
        if "CERTIFICATE_VERIFY_FAILED" in details:
            reason = details.split("CERTIFICATE_VERIFY_FAILED", 1)[1].strip(": ")
            return (f"the TLS handshake with etcd at {url} failed: we do not trust its server "
                    f"certificate ({reason.removesuffix(': OK')}); is it signed by a CA in "
                    f"{self.tls.show('ca')}?")
        if "Hostname Verification" in details or "Peer name" in details:
            return (f"the TLS handshake with etcd at {url} failed: its server certificate is "
                    f"not issued for {host}; use a name or address from the certificate's "
                    "subjectAltName in ETCD_ENDPOINTS")
        if "Handshake read failed" in details or "WRONG_VERSION_NUMBER" in details:
            return (f"etcd at {url} closed the connection during the TLS handshake: does it "
                    "serve https? (ETCD_ENDPOINTS)")
        if "security handshaker" in details:
            return f"cannot set up TLS for etcd at {url}: check {self.tls.show()}"
        return None

    def close(self):
        self._closed = True
        for watch in list(self._watches):
            watch.interrupt()
        for c in self._clients:
            c.close()

    # -- reads ----------------------------------------------------------

    def get(self, key: str) -> KV | None:
        value, meta = self._call("get", lambda c: c.get(key))
        if meta is None:
            return None
        return KV(key, value, meta.mod_revision)

    def get_prefix(self, prefix: str, keys_only: bool = False) -> tuple[list[KV], int]:
        """All keys under prefix, in key order, read at one revision.

        keys_only: values come back as b"" (a cheap listing of keys and
        their mod_revisions).
        """
        kvs, revision = [], None
        for page, revision in self.prefix_pages(prefix, keys_only):
            kvs.extend(page)
        return kvs, revision

    def prefix_pages(self, prefix: str,
                     keys_only: bool = False) -> Iterator[tuple[list[KV], int]]:
        """get_prefix a page at a time, each with the revision all are read
        at: a reader that keeps only what it parses never holds the whole
        range's raw values (30,000 endpoints: about 25 MB)."""
        end = etcd3.utils.prefix_range_end(prefix.encode())
        start, revision = prefix.encode(), None
        while True:
            # No sort order: etcd returns a range in key order anyway, and
            # with one etcd 3.4 reads and sorts the whole rest of the range
            # for every page (30,000 keys: 2.7 s instead of 0.4 s).
            resp = self._call("range", lambda c: c.get_range_response(
                start, end, limit=_PAGE, revision=revision, keys_only=keys_only))
            revision = revision or resp.header.revision
            yield [KV(kv.key.decode(), kv.value, kv.mod_revision) for kv in resp.kvs], revision
            if not resp.more:
                return
            start = resp.kvs[-1].key + b"\0"

    def revision(self) -> int:
        """The store's current revision (a count-only read is the cheapest)."""
        return self._call("get", lambda c: c.get_response("/", count_only=True)).header.revision

    # -- compare-and-swap writes ---------------------------------------

    def _txn(self, compare, success):
        ok, responses = self._call("txn", lambda c: c.transaction(compare, success, []))
        if not ok:
            return None
        return responses

    def create(self, key: str, value) -> int | None:
        """Create key; the new mod_revision, or None if it already exists."""
        tx = self._clients[0].transactions
        resp = self._txn([tx.version(key) == 0], [tx.put(key, _bytes(value))])
        return None if resp is None else resp[0].response_put.header.revision

    def update(self, key: str, value, mod_revision: int) -> int | None:
        """Replace key if unchanged since mod_revision; None if it changed or vanished."""
        tx = self._clients[0].transactions
        resp = self._txn([tx.mod(key) == mod_revision], [tx.put(key, _bytes(value))])
        return None if resp is None else resp[0].response_put.header.revision

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete key (if unchanged since mod_revision, when given).

        True when this call deleted it; False if the compare failed or the key
        was already gone.
        """
        tx = self._clients[0].transactions
        compare = [tx.mod(key) == mod_revision] if mod_revision else [tx.version(key) > 0]
        resp = self._txn(compare, [tx.delete(key)])
        return resp is not None and resp[0].response_delete_range.deleted > 0

    def commit(self, creates=(), updates=(), deletes=(), read_back=()) -> "Commit":
        """Several compare-and-swaps that succeed or fail together, in one
        round trip.

        creates: (key, value) pairs that must not exist; updates: (key, value,
        mod_revision) triples and deletes: (key, mod_revision) pairs that must
        be unchanged.  A failed commit wrote nothing; it brings back the keys
        in read_back as they are now, so the caller can retry without
        another read.
        """
        tx = self._clients[0].transactions
        compare = ([tx.version(k) == 0 for k, _ in creates]
                   + [tx.mod(k) == rev for k, _, rev in updates]
                   + [tx.mod(k) == rev for k, rev in deletes])
        success = ([tx.put(k, _bytes(v)) for k, v in creates]
                   + [tx.put(k, _bytes(v)) for k, v, _ in updates]
                   + [tx.delete(k) for k, _ in deletes])
        failure = [tx.get(k) for k in read_back]
        ok, responses = self._call("txn", lambda c: c.transaction(compare, success, failure))
        if ok:
            header = responses[0].response_put.header if creates or updates \
                else responses[0].response_delete_range.header
            return Commit(header.revision, {})
        reads = {}
        for key, found in zip(read_back, responses):  # [(value, meta)] per key
            reads[key] = KV(key, found[0][0], found[0][1].mod_revision) if found else None
        return Commit(None, reads)

    def put(self, key: str, value) -> int:
        """Unconditional write: only for keys with a single writer by design."""
        resp = self._call("put", lambda c: c.put(key, _bytes(value)))
        return resp.header.revision

    # -- watch ----------------------------------------------------------

    def watch_prefix(self, prefix: str, start_revision: int,
                     idle_timeout: float = 10.0) -> Iterator[list[WatchEvent]]:
        """Yield batches of events under prefix from start_revision on.

        The watch opens on the member that served last, else the next that
        takes it, through the member's JSON gateway (gateway.py: read in the
        caller's thread), else, where there is none (etcd's gRPC proxy),
        through gRPC.  Raises WatchStalled when nothing arrives for idle_timeout
        seconds (the client's stream can hang silently when etcd dies),
        DatastoreUnavailable when no member takes the watch or the stream
        breaks (the member lost its leader, or went away: the next watch
        starts with another), and RevisionCompacted (a DatastoreError) when
        start_revision is gone.  Callers watch again from the revision after
        the last event they saw, and re-snapshot after RevisionCompacted.
        """
        instruments.etcd_request("watch")
        watch = self._open_watch(prefix, start_revision)
        if isinstance(watch, GatewayWatch):
            idx = self._current
            self._watches.add(watch)
            try:
                yield from watch.batches(idle_timeout)
            except gateway.GatewayRefused as exc:
                # Not what etcd's gateway sends: this member's watches go
                # through gRPC from now on, resumed where this one stopped.
                self._no_gateway.add(idx)
                raise DatastoreUnavailable(
                    f"the etcd watch on {self.endpoints[idx]} through its JSON gateway "
                    f"failed ({exc}); watching through gRPC instead") from None
            except RevisionCompacted:
                raise
            except DatastoreUnavailable:
                # The next watch (and request) starts with another member.
                self._current = (idx + 1) % len(self._clients)
                raise
            finally:
                watch.close()
            return
        client, watch_id, events = watch
        try:
            while True:
                try:
                    items = [events.get(timeout=idle_timeout)]
                except queue.Empty:
                    raise WatchStalled(f"no watch event on {prefix} for {idle_timeout}s")
                # What arrived while the caller was busy is one batch: a
                # burst of writes costs its views one batch_done, not one each.
                while not events.empty():
                    items.append(events.get_nowait())
                batch = []
                for item in items:
                    if isinstance(item, Exception):
                        if batch:  # what came before the failure was seen
                            yield batch
                        if isinstance(item, etcd3.exceptions.RevisionCompactedError):
                            raise RevisionCompacted(item.compacted_revision)
                        idx = self._clients.index(client)
                        # The next watch (and request) starts with another member.
                        self._current = (idx + 1) % len(self._clients)
                        raise DatastoreUnavailable(
                            f"the etcd watch on {self.endpoints[idx]} failed: "
                            f"{_grpc_details(item) or repr(item)}")
                    batch += [_watch_event(e) for e in item.events]
                if batch:
                    yield batch
        finally:
            threading.Thread(target=_quietly, args=(client.cancel_watch, watch_id),
                             daemon=True).start()

    def _open_watch(self, prefix: str, start_revision: int):
        """The watch on the first member that takes it, starting with the
        one that served last (a watch that failed on a member that went away
        resumes on another): through the member's JSON gateway, a
        GatewayWatch; else through gRPC, (client, watch id, its queue)."""
        failures, n = [], len(self._clients)
        for i in range(n):
            idx = (self._current + i) % n
            try:
                watch = None if idx in self._no_gateway \
                    else self._open_gateway_watch(idx, prefix, start_revision)
                if watch is None:
                    watch = self._open_grpc_watch(idx, prefix, start_revision)
            except _WatchRefused as exc:
                failures.append(f"{self.endpoints[idx]} ({exc})")
                continue
            self._current = idx
            return watch
        raise DatastoreUnavailable(f"cannot watch etcd at {', '.join(failures)}")

    def _open_gateway_watch(self, idx: int, prefix: str, start_revision: int):
        """The watch through the member's gateway; None when the gateway
        does not take it (then gRPC may)."""
        url = self.endpoints[idx]
        secure, host, port = _parse_endpoint(url)
        try:
            return gateway.open_watch(url, host, port, self._ssl if secure else None, prefix,
                                      etcd3.utils.prefix_range_end(prefix.encode()),
                                      start_revision, self.timeout)
        except gateway.GatewayRefused as exc:
            if exc.absent:
                self._no_gateway.add(idx)
            LOG.debug("etcd at %s: no watch through its JSON gateway (%s); through gRPC",
                      url, exc)
            return None
        except RevisionCompacted:
            raise
        except (OSError, DatastoreError) as exc:
            raise _WatchRefused("no leader" if _NO_LEADER in str(exc)
                                else str(exc) if isinstance(exc, DatastoreError)
                                else type(exc).__name__) from None

    def _open_grpc_watch(self, idx: int, prefix: str, start_revision: int):
        events = queue.Queue()
        client = self._clients[idx]
        try:
            watch_id = client.add_watch_prefix_callback(
                prefix, events.put, start_revision=start_revision)
        except etcd3.exceptions.RevisionCompactedError as exc:
            raise RevisionCompacted(exc.compacted_revision) from exc
        except (*_UNAVAILABLE, etcd3.exceptions.WatchTimedOut, grpc.RpcError) as exc:
            tls = self._tls_failure(self.endpoints[idx], exc)
            if tls:
                raise EtcdTlsError(tls) from exc
            raise _WatchRefused("no leader" if _NO_LEADER in _grpc_details(exc)
                                else type(exc).__name__) from None
        return client, watch_id, events


class _WatchRefused(Exception):
    """A member did not take a watch (why, in a word or two)."""


def _watch_event(event) -> WatchEvent:
    deleted = isinstance(event, etcd3.events.DeleteEvent)
    return WatchEvent(event.key.decode(), None if deleted else event.value,
                      event.mod_revision)


def _quietly(fn, *args):
    # Cancelling a watch on a dead connection can block or raise; the watch
    # is abandoned either way.
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        pass


def _bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()


def _ssl_context(tls: TlsFiles) -> ssl.SSLContext:
    """The TLS context of the gateway's watches; made before gRPC's
    credentials so that Python's ssl reads the files first: gRPC reports a
    bad file only as "Failed to create security handshaker" at the first
    request, and aborts the whole process on a certificate without its
    key."""
    if bool(tls.cert) != bool(tls.key):
        raise EtcdTlsError("ETCD_CERT_FILE and ETCD_KEY_FILE go together: set both (a client "
                           f"certificate and its key) or neither ({tls.show('cert', 'key')})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca:
        try:
            context.load_verify_locations(cafile=tls.ca)
        except (ssl.SSLError, OSError) as exc:
            raise EtcdTlsError(f"cannot use {tls.show('ca')} as the CA for etcd: "
                               f"{_ssl_reason(exc)} (expected PEM certificates)") from None
    else:  # gRPC then trusts its default roots
        context.load_default_certs()
    if tls.cert:
        try:
            context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise EtcdTlsError(
                f"cannot use the client certificate ({tls.show('cert', 'key')}): "
                f"{_ssl_reason(exc)} (expected a PEM certificate and its unencrypted PEM key)"
            ) from None
    return context


def _ssl_reason(exc) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason.lower().replace("_", " ") if exc.reason else "not PEM"
    return exc.strerror or str(exc)


def _grpc_details(exc) -> str:
    """The text of the gRPC error behind an etcd3 exception: python3-etcd3
    raises its own exception while handling the grpc.RpcError, which so
    becomes its __context__."""
    error = exc if isinstance(exc, grpc.RpcError) else (exc.__cause__ or exc.__context__)
    if not isinstance(error, grpc.RpcError):
        return ""
    try:
        return error.details() or ""
    except Exception:  # noqa: BLE001 - an RpcError without details
        return ""


def _plain_http_hint(url: str, exc) -> str:
    if not _parse_endpoint(url)[0] and "Socket closed" in _grpc_details(exc):
        return ": the connection was closed; if etcd serves https, use https:// in ETCD_ENDPOINTS"
    return ""


def _read(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()

