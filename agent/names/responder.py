"""The DNS responder: A and AAAA answers for the names of the querier's own
network, everything else forwarded to the upstream the container was asking.

It answers from the querier's address: the endpoint holding it gives the
network, and only names of that network resolve (`<name>` and
`<name>.<network>`, as Docker's embedded DNS answers its own host's
containers). Any other question, or one from an address that is no
endpoint, goes unchanged to the listener's upstreams and the reply comes
back unchanged, so external names resolve exactly as without us. Nothing
hangs: a forward is bounded by FORWARD_TIMEOUT (under the 4 s Docker's
embedded resolver waits for an upstream), and an upstream that fails or
stays silent gets the client a SERVFAIL, on which Docker tries its next
server, as it would have on the upstream's own silence.

UDP and TCP, on sockets the caller binds (Listener), IPv4 and IPv6; one
asyncio loop in a daemon thread serves them all, and echoes the names
watchdog's probes (serve_probes), so that a loop that stops answering is
seen from outside the process.
"""

import asyncio
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSError, DNSRecord

from agent.names import upstreams
from agent.names.index import NameTable
from metrics import instruments

LOG = logging.getLogger(__name__)

DNS_PORT = 53
FORWARD_TIMEOUT = 3.5  # seconds for all of a question's upstreams together
TCP_IDLE_TIMEOUT = 10.0  # a client connection with no question for this long is closed
MAX_IN_FLIGHT = 1024  # forwards at once, as Docker's embedded resolver caps them
TTL = 0  # names change within seconds on any host: nothing may cache them
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux's value; Python 3.11 lacks the name
# Where the interception sends IPv6 questions (upstreams.GATEWAY6): the
# listeners on "::" answer only what was sent there.
GATEWAY6 = socket.inet_pton(socket.AF_INET6, upstreams.GATEWAY6)


@dataclass
class Listener:
    """One address:port served over UDP and TCP, forwarding to `upstreams`
    ((address, port) pairs tried in order, read at each question: the
    service changes them when the host's nameservers change)."""

    address: str
    port: int
    upstreams: tuple[tuple[str, int], ...]
    udp: socket.socket | None = None
    tcp: socket.socket | None = None

    def bind(self) -> "Listener":
        """Bind both sockets (port 0: the same free port for both).  The
        address need not exist yet (IP_FREEBIND): 169.254.1.1 is on the host
        only while some cali veth is."""
        for _ in range(20):
            udp = _socket(socket.SOCK_DGRAM, self.address, self.port)
            port = udp.getsockname()[1]
            try:
                tcp = _socket(socket.SOCK_STREAM, self.address, port)
            except OSError:
                udp.close()
                if self.port:
                    raise
                continue  # that port is taken for TCP: another free one
            tcp.listen(128)
            self.udp, self.tcp, self.port = udp, tcp, port
            return self
        raise OSError(f"no port free for UDP and TCP on {self.address}")

    def close(self) -> None:
        for sock in (self.udp, self.tcp):
            if sock is not None:
                sock.close()


def _socket(kind: int, address: str, port: int) -> socket.socket:
    ipv6 = ":" in address
    sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ipv6:  # "::" (see intercept.py): IPv6 only, IPv4 has listeners of its own
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        else:
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


def local_answer(table: NameTable, source: str, query: bytes) -> bytes | None:
    """The reply to `query` from `source` when it asks A or AAAA of a name
    of the querier's network; None when it must be forwarded."""
    network = table.network_of(source)
    if network is None:
        return None
    try:
        record = DNSRecord.parse(query)
    except (DNSError, ValueError, IndexError, struct.error):
        return None
    if (record.header.qr or record.header.opcode != 0 or len(record.questions) != 1
            or record.q.qtype not in (QTYPE.A, QTYPE.AAAA)):
        return None
    found = table.lookup(network, str(record.q.qname))
    if found is None:
        return None
    v4, v6 = found
    reply = record.reply()  # same id and question; aa, ra
    if record.q.qtype == QTYPE.A:
        rdatas = [A(a) for a in v4]
    else:
        rdatas = [AAAA(a) for a in v6]
    random.shuffle(rdatas)  # as Docker does
    for rdata in rdatas:  # none: an empty NOERROR, the name exists
        reply.add_answer(RR(record.q.qname, record.q.qtype, rdata=rdata, ttl=TTL))
    return reply.pack()


def servfail(query: bytes) -> bytes | None:
    try:
        record = DNSRecord.parse(query)
    except (DNSError, ValueError, IndexError, struct.error):
        return None
    reply = record.reply(aa=0)
    reply.header.rcode = RCODE.SERVFAIL
    return reply.pack()


class Responder:
    """Serves Listeners with answers from table() (read at each question)."""

    def __init__(self, table: Callable[[], NameTable], forward_timeout: float = FORWARD_TIMEOUT):
        self.table = table
        self.forward_timeout = forward_timeout
        self.listeners: list[Listener] = []
        self.loop = asyncio.new_event_loop()
        self._thread = None
        self._in_flight = 0
        self._servers = {}  # id(listener) -> its UDP transport and TCP server

    def start(self, listeners: list[Listener]) -> "Responder":
        self._thread = threading.Thread(target=self.loop.run_forever, name="dns-responder",
                                        daemon=True)
        self._thread.start()
        self.add(listeners)
        return self

    def serve_probes(self, probes: socket.socket) -> None:
        """Echo every datagram of `probes` (a watchdog's socket, see
        watchdog.py) from the loop that answers the questions."""
        probes.setblocking(False)
        self.loop.call_soon_threadsafe(self.loop.add_reader, probes, _echo, probes)

    def add(self, listeners: list[Listener]) -> None:
        asyncio.run_coroutine_threadsafe(self._serve(listeners), self.loop).result(10)

    def remove(self, listeners: list[Listener]) -> None:
        """Stop serving listeners and close their sockets."""
        asyncio.run_coroutine_threadsafe(self._close(listeners), self.loop).result(5)
        for listener in listeners:
            listener.close()

    def stop(self) -> None:
        if self._thread is None:
            return
        self.remove(list(self.listeners))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self._thread = None

    async def _serve(self, listeners: list[Listener]) -> None:
        for listener in listeners:
            if listener.udp.family == socket.AF_INET6:
                transport = _UdpServer6(self, listener)
            else:
                transport, _ = await self.loop.create_datagram_endpoint(
                    lambda lst=listener: _UdpServer(self, lst), sock=listener.udp)
            server = await asyncio.start_server(
                lambda r, w, lst=listener: self._tcp_client(lst, r, w), sock=listener.tcp)
            self._servers[id(listener)] = (transport, server)
            self.listeners.append(listener)

    async def _close(self, listeners: list[Listener]) -> None:
        for listener in listeners:
            for server in self._servers.pop(id(listener), ()):
                server.close()
            self.listeners.remove(listener)

    async def answer(self, listener: Listener, source: str, query: bytes, tcp: bool) -> bytes:
        """The reply to one question (local, forwarded, or SERVFAIL)."""
        started = time.monotonic()
        local = local_answer(self.table(), source, query)
        if local is not None:
            instruments.dns_answered("local", started)
            return local
        reply = None
        if self._in_flight < MAX_IN_FLIGHT:
            self._in_flight += 1
            try:
                reply = await self._forward(listener.upstreams, query, tcp)
            finally:
                self._in_flight -= 1
        instruments.dns_answered("servfail" if reply is None else "forwarded", started)
        return reply if reply is not None else servfail(query)

    async def _forward(self, upstreams, query: bytes, tcp: bool) -> bytes | None:
        """The first upstream's reply that is not SERVFAIL or REFUSED (which
        make Docker try its next server too), within forward_timeout for
        all of them; None when none gave one."""
        deadline = time.monotonic() + self.forward_timeout
        fallback = None
        for i, upstream in enumerate(upstreams):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timeout = left / (len(upstreams) - i)  # a silent one leaves time for the rest
            try:
                exchange = _tcp_exchange if tcp else _udp_exchange
                reply = await asyncio.wait_for(exchange(upstream, query), timeout)
            except (OSError, asyncio.IncompleteReadError) as exc:
                LOG.debug("upstream %s:%d failed: %r", *upstream, exc)
                continue
            if len(reply) >= 4 and reply[3] & 0x0F in (RCODE.SERVFAIL, RCODE.REFUSED):
                fallback = reply
                continue
            return reply
        return fallback

    async def _tcp_client(self, listener, reader, writer) -> None:
        source = writer.get_extra_info("peername")[0]
        local = writer.get_extra_info("sockname")
        if len(local) == 4 and socket.inet_pton(socket.AF_INET6,
                                                local[0].split("%")[0]) != GATEWAY6:
            writer.close()  # "::" reached otherwise than through the interception
            return
        try:
            while True:
                size = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                query = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", size)[0]),
                                               TCP_IDLE_TIMEOUT)
                reply = await self.answer(listener, source, query, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _echo(probes: socket.socket) -> None:
    """Answer the watchdog's probes: that this loop runs is what it asks."""
    try:
        while probe := probes.recv(64):
            probes.send(probe)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        LOG.debug("watchdog probe socket: %s", exc)
    # The watchdog is gone; its successor comes with a socket of its own.
    asyncio.get_running_loop().remove_reader(probes)
    probes.close()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder, listener: Listener):
        self.responder, self.listener = responder, listener
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        asyncio.ensure_future(self._reply(data, addr))

    async def _reply(self, data, addr):
        reply = await _udp_answer(self.responder, self.listener, data, addr[0])
        if reply is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc):
        LOG.debug("DNS socket error: %s", exc)


class _UdpServer6:
    """UDP on "::" (the IPv6 questions the interception sends to fe80::1):
    each reply leaves from the address its question was sent to (read with
    IPV6_PKTINFO), which conntrack needs to undo the DNAT; the kernel would
    choose a global address of its own for a global destination."""

    def __init__(self, responder: Responder, listener: Listener):
        self.responder, self.listener, self.sock = responder, listener, listener.udp
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.sock.setblocking(False)
        responder.loop.add_reader(self.sock, self._read)
        self.closed = False

    def _read(self):
        try:
            data, ancillary, _, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(20))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            LOG.debug("DNS socket error: %s", exc)
            return
        info = [(level, kind, value) for level, kind, value in ancillary
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO]
        if info and info[0][2][:16] == GATEWAY6:  # else "::" reached otherwise than
            asyncio.ensure_future(self._reply(data, addr, info))  # through the interception

    async def _reply(self, data, addr, info):
        reply = await _udp_answer(self.responder, self.listener, data, addr[0])
        if reply is not None and not self.closed:
            try:
                self.sock.sendmsg([reply], info, 0, addr)
            except OSError as exc:
                LOG.debug("DNS reply to %s: %s", addr[0], exc)

    def close(self):
        if not self.closed:
            self.closed = True
            self.responder.loop.remove_reader(self.sock)


async def _udp_answer(responder: Responder, listener: Listener, data: bytes,
                      source: str) -> bytes | None:
    try:
        return await responder.answer(listener, source, data, tcp=False)
    except Exception:  # noqa: BLE001 - one bad question must not stop the server
        LOG.exception("DNS question from %s failed", source)
        return servfail(data)


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, query_id: bytes):
        self.query_id = query_id
        self.reply = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if data[:2] == self.query_id and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc):  # e.g. ICMP port unreachable: fail now, not at the timeout
        if not self.reply.done():
            self.reply.set_exception(exc)


async def _udp_exchange(upstream: tuple[str, int], query: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _UdpExchange(query[:2]), remote_addr=upstream, family=family)
    try:
        transport.sendto(query)
        return await protocol.reply
    finally:
        transport.close()


async def _tcp_exchange(upstream: tuple[str, int], query: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(query)) + query)
        await writer.drain()
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        return await reader.readexactly(size)
    finally:
        writer.close()
