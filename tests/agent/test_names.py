"""Names across hosts in the agent, without kernel or etcd: the name index
fed etcd keys, the responder's answers (dnslib packets), and its forwarding
to a fake upstream on loopback: replies relayed unchanged, bounded by the
timeout, SERVFAIL when the upstream fails, UDP and TCP."""

import json
import socket
import struct
import threading
import time

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from agent.names import upstreams
from agent.names.index import NameIndex
from agent.names.intercept import script
from agent.names.responder import Listener, Responder, local_answer
from datastore.records import WORKLOAD_ENDPOINTS
from tests.introspect import feed

WEP_PREFIX = WORKLOAD_ENDPOINTS.prefix

A_IP, E_IP, B_IP = "10.65.0.2", "10.65.1.5", "10.65.0.3"


def wep(name, node, network, names, networks):
    return json.dumps({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "namespace": "libnetwork", "annotations": {
            "libnetwork.projectcalico.org/network-name": network,
            "libnetwork.projectcalico.org/dns-names": json.dumps(names)}},
        "spec": {"node": node, "ipNetworks": networks, "profiles": [network]}}).encode()


def guide_index() -> NameIndex:
    index = NameIndex()
    feed(index, WEP_PREFIX + "libnetwork/a", wep("a", "h1", "net1", ["workload-a"],
                                             [f"{A_IP}/32"]))
    feed(index, WEP_PREFIX + "libnetwork/e", wep("e", "h2", "net1", ["workload-e", "db"],
                                             [f"{E_IP}/32", "fd00::5/128"]))
    feed(index, WEP_PREFIX + "libnetwork/b", wep("b", "h1", "net2", ["workload-b"],
                                             [f"{B_IP}/32"]))
    index.batch_done(True, True)
    return index


def ask(name, qtype="A"):
    return DNSRecord.question(name, qtype).pack()


def answers(reply: bytes):
    record = DNSRecord.parse(reply)
    return record.header.rcode, sorted(str(rr.rdata) for rr in record.rr)


def test_index_answers_names_of_the_queriers_network_only():
    table = guide_index().table
    assert table.network_of(A_IP) == "net1"
    assert table.lookup("net1", "Workload-E.") == ((E_IP,), ("fd00::5",))
    assert table.lookup("net1", "workload-e.net1") == ((E_IP,), ("fd00::5",))
    assert table.lookup("net1", "db") == ((E_IP,), ("fd00::5",))
    assert table.lookup("net1", "workload-b") is None
    assert table.lookup("net1", "workload-b.net2") is None
    assert table.lookup("net2", "workload-e") is None


def test_index_forgets_a_deleted_endpoint_at_the_end_of_the_batch():
    index = guide_index()
    assert feed(index, WEP_PREFIX + "libnetwork/e", None)
    assert index.table.lookup("net1", "workload-e") is not None  # until the batch ends
    index.batch_done(True, False)
    assert index.table.lookup("net1", "workload-e") is None
    assert not feed(index, "/calico/resources/v3/projectcalico.org/profiles/net1", b"{}")


def test_an_update_that_changes_no_answer_keeps_the_table():
    index = guide_index()
    table, key = index.table, WEP_PREFIX + "libnetwork/e"
    record = json.loads(wep("e", "h2", "net1", ["workload-e", "db"],
                            [f"{E_IP}/32", "fd00::5/128"]))
    record["metadata"]["annotations"]["libnetwork.projectcalico.org/sandbox"] = "/var/run/x"
    assert not feed(index, key, json.dumps(record).encode())  # Join's annotation
    index.batch_done(False, False)
    assert index.table is table
    assert feed(index, key, wep("e", "h2", "net1", ["workload-e"], [f"{E_IP}/32"]))
    index.batch_done(True, False)
    assert index.table.lookup("net1", "db") is None


def test_local_answers():
    table = guide_index().table
    assert answers(local_answer(table, A_IP, ask("workload-e"))) == (RCODE.NOERROR, [E_IP])
    assert answers(local_answer(table, A_IP, ask("workload-e.net1", "AAAA"))) == \
        (RCODE.NOERROR, ["fd00::5"])
    # A known name without IPv6: an empty NOERROR, never NXDOMAIN.
    assert answers(local_answer(table, E_IP, ask("workload-a", "AAAA"))) == (RCODE.NOERROR, [])
    assert DNSRecord.parse(local_answer(table, A_IP, ask("workload-e"))).rr[0].ttl == 0
    # Everything else is forwarded.
    assert local_answer(table, A_IP, ask("workload-b")) is None
    assert local_answer(table, A_IP, ask("workload-e", "MX")) is None
    assert local_answer(table, "10.9.9.9", ask("workload-e")) is None  # not an endpoint
    assert local_answer(table, A_IP, b"\x00\x01garbage") is None


class FakeUpstream:
    """A DNS server on loopback: answers A 192.0.2.1 for anything, or stays
    silent, or answers SERVFAIL; UDP and TCP."""

    def __init__(self, mode="answer"):
        self.mode = mode
        self.udp, self.tcp = self._bind()
        self.port = self.udp.getsockname()[1]
        self.tcp.listen()
        self.asked = []
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    @staticmethod
    def _bind():
        """UDP and TCP sockets on one free port (a free UDP port may be a
        taken TCP one: try another)."""
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket()
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
        raise OSError("no port free for both UDP and TCP on 127.0.0.1")

    def reply(self, query: bytes) -> bytes | None:
        self.asked.append(query)
        record = DNSRecord.parse(query)
        if self.mode == "silent":
            return None
        reply = record.reply(aa=0)
        if self.mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        else:
            reply.add_answer(RR(record.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=300))
        return reply.pack()

    def _serve_udp(self):
        while True:
            try:
                data, addr = self.udp.recvfrom(65535)
            except OSError:
                return
            reply = self.reply(data)
            if reply:
                try:
                    self.udp.sendto(reply, addr)
                except OSError:
                    return

    def _serve_tcp(self):
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                size = struct.unpack("!H", conn.recv(2))[0]
                reply = self.reply(conn.recv(size))
                if reply:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                else:
                    time.sleep(5)

    def close(self):
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def serve():
    made = []

    def start(upstream_ports, timeout=1.0):
        listener = Listener("127.0.0.1", 0, tuple(("127.0.0.1", p) for p in upstream_ports))
        responder = Responder(lambda: guide_index().table, forward_timeout=timeout)
        responder.start([listener.bind()])
        made.append(responder)
        return listener.port
    yield start
    for responder in made:
        responder.stop()


def udp_ask(port, query, timeout=5.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, ("127.0.0.1", port))
        return s.recvfrom(65535)[0]


def tcp_ask(port, query, timeout=5.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", s.recv(2))[0]
        data = b""
        while len(data) < size:
            data += s.recv(size - len(data))
        return data


@pytest.mark.parametrize("exchange", [udp_ask, tcp_ask], ids=["udp", "tcp"])
def test_forwarded_unchanged(serve, exchange):
    upstream = FakeUpstream()
    try:
        port = serve([upstream.port])
        query = ask("external.example")
        reply = exchange(port, query)
        assert upstream.asked == [query]  # the question as the container asked it
        assert reply == upstream.reply(query)  # and the reply as the upstream gave it
        assert DNSRecord.parse(reply).header.id == DNSRecord.parse(query).header.id
    finally:
        upstream.close()


@pytest.mark.parametrize("exchange", [udp_ask, tcp_ask], ids=["udp", "tcp"])
def test_silent_upstream_gets_servfail_within_the_timeout(serve, exchange):
    upstream = FakeUpstream("silent")
    try:
        port = serve([upstream.port], timeout=0.5)
        started = time.monotonic()
        assert answers(exchange(port, ask("slow.example")))[0] == RCODE.SERVFAIL
        assert time.monotonic() - started < 1.0
    finally:
        upstream.close()


def test_next_upstream_after_servfail_or_none_listening(serve):
    failing, working = FakeUpstream("servfail"), FakeUpstream()
    closed = FakeUpstream()
    closed.close()  # nothing listens there: refused at once
    try:
        port = serve([closed.port, failing.port, working.port])
        assert answers(udp_ask(port, ask("x.example"))) == (RCODE.NOERROR, ["192.0.2.1"])
        assert len(failing.asked) == 1 and len(working.asked) == 1
    finally:
        failing.close()
        working.close()


def test_no_upstream_answers_servfail(serve):
    port = serve([])
    assert answers(udp_ask(port, ask("x.example")))[0] == RCODE.SERVFAIL


def test_resolv_conf(tmp_path, monkeypatch):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search lab\nnameserver 10.0.0.53\nnameserver 127.0.0.1\n"
                    "nameserver fd00::53\nnameserver 10.0.0.53\noptions ndots:2\n")
    assert upstreams.nameservers(str(conf)) == ["10.0.0.53", "127.0.0.1", "fd00::53"]
    assert upstreams.intercepted(upstreams.nameservers(str(conf))) == ["10.0.0.53", "fd00::53"]
    assert upstreams.intercepted(["fe80::53", "169.254.0.53", "::1"]) == []
    assert upstreams.fallback(["127.0.0.53", "fd00::53", "10.0.0.53"]) == "10.0.0.53"
    assert upstreams.fallback(["127.0.0.53"]) is None  # a container's packet cannot go there
    stub, real = tmp_path / "stub.conf", tmp_path / "real.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    real.write_text("nameserver 192.0.2.53\n")
    monkeypatch.setattr(upstreams, "SYSTEMD_RESOLV_CONF", str(real))
    assert upstreams.nameservers(str(stub)) == ["192.0.2.53"]


def test_interception_script():
    redirects = {"10.0.0.53": 40001, "fd00::53": 40002}
    text = script(redirects, fallback="10.0.0.53")
    assert "flags owner" in text
    for proto in ("udp", "tcp"):
        assert (f'iifname "cali*" ip daddr 10.0.0.53 {proto} dport 53 dnat ip to '
                "169.254.1.1:40001") in text
        assert (f'iifname "cali*" ip6 daddr fd00::53 {proto} dport 53 dnat ip6 to '
                "[fe80::1]:40002") in text
    assert "dnat ip to 10.0.0.53:53" not in text  # the fallback is for a stuck responder
    # The IPv6 listeners listen on "::": only what came in through a cali veth reaches them.
    assert ('iifname != "cali*" meta nfproto ipv6 meta l4proto { tcp, udp } th dport '
            "{ 40002 } drop") in text
    # The responder does not answer: nothing goes to it, 169.254.1.1's questions
    # go to the fallback.
    bypassed = script(redirects, bypassed=True, fallback="10.0.0.53")
    assert "169.254.1.1:4000" not in bypassed and "fe80::1" not in bypassed
    assert ('iifname "cali*" ip daddr 169.254.1.1 udp dport 53 dnat ip to 10.0.0.53:53'
            in bypassed)
    assert "dnat" not in script(redirects, bypassed=True)  # no fallback: no rule


def test_behind_the_gateway(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    daemon = tmp_path / "daemon.json"
    assert upstreams.behind_gateway(str(daemon), str(conf)) == ["127.0.0.53"]  # no file
    daemon.write_text('{"dns": ["169.254.1.1", "10.0.0.53", "10.0.1.53"]}')
    assert upstreams.behind_gateway(str(daemon), str(conf)) == ["10.0.0.53", "10.0.1.53"]
    daemon.write_text('{"dns": ["169.254.1.1"]}')
    assert upstreams.behind_gateway(str(daemon), str(conf)) == ["127.0.0.53"]


@pytest.mark.parametrize("exchange", [udp_ask, tcp_ask], ids=["udp", "tcp"])
def test_local_a_and_aaaa_over_the_wire(exchange):
    """A querier's own network's names, IPv4 and IPv6, answered by the
    responder itself; another network's name goes to the upstream."""
    index = guide_index()
    feed(index, WEP_PREFIX + "libnetwork/q", wep("q", "h1", "net1", ["querier"],
                                             ["127.0.0.1/32", "fd00::7/128"]))
    feed(index, WEP_PREFIX + "libnetwork/f", wep("f", "h3", "net1", ["workload-f"],
                                             ["10.65.2.6/32", "fd00::6/128",
                                              "fd00::16/128"]))
    index.batch_done(True, False)
    upstream = FakeUpstream()
    listener = Listener("127.0.0.1", 0, (("127.0.0.1", upstream.port),)).bind()
    responder = Responder(lambda: index.table, forward_timeout=1.0).start([listener])
    try:
        port = listener.port
        assert answers(exchange(port, ask("workload-f", "AAAA"))) == \
            (RCODE.NOERROR, ["fd00::16", "fd00::6"])
        assert answers(exchange(port, ask("workload-f.net1", "A"))) == \
            (RCODE.NOERROR, ["10.65.2.6"])
        assert answers(exchange(port, ask("workload-e", "AAAA"))) == \
            (RCODE.NOERROR, ["fd00::5"])
        assert upstream.asked == []
        # workload-b is on net2: not ours to answer, the upstream's reply comes back.
        assert answers(exchange(port, ask("workload-b", "AAAA"))) == \
            (RCODE.NOERROR, ["192.0.2.1"])
        assert len(upstream.asked) == 1
    finally:
        responder.stop()
        upstream.close()
