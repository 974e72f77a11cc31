"""Watches through etcd's JSON gateway (datastore/gateway.py) against a real
etcd: the events gRPC gives, read in the watcher's own thread (no thread of
the etcd library's), what arrived meanwhile as one batch, over TLS too, the
start revision compacted, a quiet watch, Etcd.close() ending a blocked one,
and gRPC where there is no gateway (etcd's gRPC proxy) or where the gateway
cannot serve (a server certificate etcd's gateway cannot dial itself with).
Then the stream's framing, fed by hand through a socket pair: split
anywhere, and every way it can go wrong."""

import json
import random
import socket
import threading
import time

import pytest

from datastore.errors import DatastoreUnavailable, RevisionCompacted, WatchStalled
from datastore.etcd import Etcd
from datastore.gateway import GatewayRefused, GatewayWatch, WatchEvent
from tests.lab.etcd import EtcdServer, EtcdTls
from tests.lab.grpc_proxy import EtcdGrpcProxy
from tests.lab.tls import make_cert

PREFIX = "/calico/gateway-test/"


def first_events(etcd: Etcd, start: int, count: int) -> tuple[list[WatchEvent], set]:
    """The first `count` events from `start` on, and the threads that
    reading them started."""
    threads = set(threading.enumerate())
    events, watch = [], etcd.watch_prefix(PREFIX, start, 5.0)
    while len(events) < count:
        events += next(watch)
    watch.close()
    return events, set(threading.enumerate()) - threads


def writes(etcd: Etcd) -> tuple[int, list[WatchEvent]]:
    """A put, a put of an empty value (not a delete) and a delete, and the
    events they make."""
    start = etcd.revision() + 1
    first = etcd.put(PREFIX + "a", b'{"n": 1}')
    empty = etcd.put(PREFIX + "b", b"")
    assert etcd.delete(PREFIX + "a")
    return start, [WatchEvent(PREFIX + "a", b'{"n": 1}', first),
                   WatchEvent(PREFIX + "b", b"", empty),
                   WatchEvent(PREFIX + "a", None, empty + 1)]


def test_the_events_are_grpcs_read_without_a_thread_of_their_own(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)
    try:
        start, expected = writes(etcd)
        assert first_events(etcd, start, 3) == (expected, set())
        with EtcdGrpcProxy([etcd_clean.endpoints]) as proxy:  # no gateway: gRPC
            through_proxy = Etcd(proxy.endpoints, timeout=2.0)
            try:
                events, started = first_events(through_proxy, start, 3)
                assert events == expected
                assert any(t.name.startswith("etcd3_watch") for t in started)
            finally:
                through_proxy.close()
    finally:
        etcd.close()


def test_what_arrived_meanwhile_is_one_batch(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)
    try:
        watch = etcd.watch_prefix(PREFIX, etcd.revision() + 1, 5.0)
        etcd.put(PREFIX + "first", b"1")
        assert [e.key for e in next(watch)] == [PREFIX + "first"]
        revisions = [etcd.put(f"{PREFIX}{n:02d}", b"x" * 3000) for n in range(20)]
        time.sleep(0.3)
        assert [e.mod_revision for e in next(watch)] == revisions
        watch.close()
    finally:
        etcd.close()


def test_over_tls_a_value_longer_than_a_tls_record_comes_whole(tls_etcd, etcd_pki):
    pki = etcd_pki
    etcd = Etcd(tls_etcd.endpoints, ca_cert=pki["ca"].cert, cert=pki["client"].cert,
                key=pki["client"].key, timeout=2.0)
    try:
        start = etcd.revision() + 1
        big = bytes(random.Random(1).randrange(256) for _ in range(200_000))
        revisions = [etcd.put(PREFIX + "big", big), etcd.put(PREFIX + "small", b"s")]
        assert first_events(etcd, start, 2) == ([WatchEvent(PREFIX + "big", big, revisions[0]),
                                                 WatchEvent(PREFIX + "small", b"s", revisions[1])],
                                                set())
    finally:
        etcd.close()


def test_a_gateway_that_cannot_dial_its_member_leaves_the_watch_to_grpc(etcd_pki, tmp_path):
    """With --client-cert-auth, etcd's gateway dials its own member with the
    server's certificate: one made for serverAuth alone is refused."""
    pki = etcd_pki
    server = make_cert(tmp_path, "server-only", pki["ca"], san="IP:127.0.0.1",
                       usage="serverAuth")
    with EtcdServer(tls=EtcdTls(pki["ca"].cert, server.cert, server.key,
                                pki["client"].cert, pki["client"].key)) as member:
        etcd = Etcd(member.endpoints, ca_cert=pki["ca"].cert, cert=pki["client"].cert,
                    key=pki["client"].key, timeout=2.0)
        try:
            start, expected = writes(etcd)
            assert first_events(etcd, start, 3)[0] == expected
        finally:
            etcd.close()


def test_a_gateway_stream_not_as_etcd_sends_it_moves_the_member_to_grpc(etcd_clean,
                                                                         monkeypatch):
    """The watch ends as a member going away does; the next one, from where
    it stopped, goes through gRPC, and the member's watches stay there."""
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)
    try:
        start, expected = writes(etcd)
        real = GatewayWatch._events

        def garbled_once(self, message):  # the first message after "created"
            if message.get("result", {}).get("created"):
                return real(self, message)
            monkeypatch.setattr(GatewayWatch, "_events", real)
            return real(self, {"result": {"events": [{"kv": {}}]}})  # no key
        monkeypatch.setattr(GatewayWatch, "_events", garbled_once)
        with pytest.raises(DatastoreUnavailable, match="watching through gRPC instead"):
            next(etcd.watch_prefix(PREFIX, start, 5.0))
        events, started = first_events(etcd, start, 3)
        assert events == expected
        assert any(t.name.startswith("etcd3_watch") for t in started)
    finally:
        etcd.close()


def test_a_compacted_start_revision_is_said(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)
    try:
        start = etcd.revision() + 1
        etcd.put(PREFIX + "a", b"1")
        now = etcd.put(PREFIX + "a", b"2")
        etcd_clean.ctl("compact", str(now))
        with pytest.raises(RevisionCompacted) as compacted:
            next(etcd.watch_prefix(PREFIX, start, 5.0))
        assert compacted.value.compacted_revision == now
    finally:
        etcd.close()


def test_a_quiet_watch_stalls_and_close_ends_a_blocked_one(etcd_clean):
    etcd = Etcd(etcd_clean.endpoints, timeout=2.0)
    try:
        began = time.monotonic()
        with pytest.raises(WatchStalled):
            next(etcd.watch_prefix(PREFIX, etcd.revision() + 1, 0.5))
        assert time.monotonic() - began < 2.5
        watch = etcd.watch_prefix(PREFIX, etcd.revision() + 1, 30.0)
        threading.Timer(0.3, etcd.close).start()
        began = time.monotonic()
        with pytest.raises(DatastoreUnavailable):
            next(watch)
        assert time.monotonic() - began < 3
    finally:
        etcd.close()


# --- the stream's framing, by hand --------------------------------------------

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
CREATED = {"result": {"header": {"revision": "9"}, "created": True}}


def event(key: str, value: bytes | None, revision: int) -> dict:
    kv = {"key": _b64(key.encode()), "mod_revision": str(revision)}
    if value:
        kv["value"] = _b64(value)
    return {"type": "DELETE", "kv": kv} if value is None else {"kv": kv}


def _b64(data: bytes) -> str:
    import base64
    return base64.b64encode(data).decode()


def chunked(body: bytes, sizes) -> bytes:
    out, at = b"", 0
    for size in sizes:
        piece = body[at:at + size]
        if not piece:
            break
        out += b"%x; ext=1\r\n%s\r\n" % (len(piece), piece)
        at += size
    return out + (b"%x\r\n%s\r\n" % (len(body) - at, body[at:]) if at < len(body) else b"")


def feed(pieces, idle=2.0):
    """A GatewayWatch reading `pieces`, sent one by one a moment apart."""
    ours, theirs = socket.socketpair()
    ours.settimeout(idle)

    def send():
        for piece in pieces:
            theirs.sendall(piece)
            time.sleep(0.005)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    watch = GatewayWatch("http://etcd.test:2379", ours)
    return watch, theirs


def test_blank_lines_are_no_messages():
    created = chunked(b"\n\n" + json.dumps(CREATED).encode() + b"\n", [3, 1000])
    events = chunked(b"\n" + json.dumps({"result": {"events": [event("/k", b"v", 10)]}}).encode()
                     + b"\n\n", [1000])
    watch, theirs = feed([HEAD + chunked(b"\n", [10]), created, events])
    watch.created()
    assert next(watch.batches(2.0)) == [WatchEvent("/k", b"v", 10)]
    theirs.close()


@pytest.mark.parametrize("seed", range(8))
def test_messages_split_anywhere_across_chunks_and_reads(seed):
    rng = random.Random(seed)
    messages = [CREATED,
                {"result": {"events": [event("/k/a", b"1" * 700, 10), event("/k/b", b"", 11)]}},
                {"result": {"events": [event("/k/a", None, 12)]}}]
    body = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    stream = HEAD + chunked(body, [rng.randint(1, 300) for _ in range(40)])
    cuts = sorted(rng.sample(range(1, len(stream)), 12))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    watch, theirs = feed(pieces)
    watch.created()
    events, batches = [], watch.batches(2.0)
    while len(events) < 3:
        events += next(batches)
    assert events == [WatchEvent("/k/a", b"1" * 700, 10), WatchEvent("/k/b", b"", 11),
                      WatchEvent("/k/a", None, 12)]
    theirs.close()
    with pytest.raises(DatastoreUnavailable, match="closed the watch"):
        next(batches)


@pytest.mark.parametrize("after, error, words", [
    (b"0\r\n\r\n", DatastoreUnavailable, "ended the watch"),
    (chunked(b"not json\n", [100]), GatewayRefused, "not JSON"),
    (chunked(b'{"result": {"events": [{"kv": {"key": 7}}]}}\n', [100]), GatewayRefused,
     "not as etcd's gateway sends them"),
    (chunked(b'["a list"]\n', [100]), GatewayRefused, "not as etcd's gateway sends them"),
    (chunked(json.dumps({"error": {"grpc_code": 14, "message": "etcdserver: no leader"}})
             .encode() + b"\n", [100]), DatastoreUnavailable, "etcdserver: no leader"),
    (chunked(json.dumps({"result": {"canceled": True, "compact_revision": "7"}}).encode()
             + b"\n", [100]), RevisionCompacted, "now 7"),
    (chunked(json.dumps({"result": {"canceled": True, "cancel_reason": "why not"}}).encode()
             + b"\n", [100]), DatastoreUnavailable, "why not"),
    (b"", WatchStalled, "no watch event"),
])
def test_a_broken_stream_is_a_typed_error(after, error, words):
    created = chunked(json.dumps(CREATED).encode() + b"\n", [1000])
    watch, theirs = feed([HEAD + created, after], idle=0.5)
    watch.created()
    with pytest.raises(error, match=words):
        next(watch.batches(0.5))
    theirs.close()


@pytest.mark.parametrize("head, absent", [
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n", True),
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
    (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000, False),
    (HEAD + chunked(b'["created"]\n', [100]), False),
    (HEAD + chunked(b'{"result": {"header": {}}}\n', [100]), False),
])
def test_a_response_that_is_no_watch_is_refused(head, absent):
    watch, theirs = feed([head])
    with pytest.raises(GatewayRefused) as refused:
        watch.created()
    assert refused.value.absent is absent
    theirs.close()
