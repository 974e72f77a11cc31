"""Netlink, one way for the whole project: one socket per thread, kept
between calls.

pyroute2's sync sockets serve one thread, and opening one costs about as
much as a request (the driver's Join measured it), so each thread keeps its
own (`rtnl`), and a forked child opens its own (it may have moved to
another namespace).  Changes (link, addresses, routes) are messages built by
pyroute2's own request filters, exactly as ``IPRoute.link/addr/route``
build them, but sent on pyroute2's plain ``IPRSocket`` and their acks read
back in the same thread: ``IPRoute`` runs an asyncio loop for every
request, which cost ~0.5 ms of CPU each where the kernel needs ~0.1 ms, on
the path dockerd waits on.  Changes that can go together go in one send,
each with its own ack, checked in order (`Netlink.change`).  Queries and
the other requests use the thread's ``IPRoute``, opened on first use
(`iproute`).  Interface indexes come from if_nametoindex (`index`), a system
call where a netlink link query costs a round trip and a parse.

A failure escaping a block closes the thread's sockets, so that the next
call starts from fresh ones (no ack of an earlier request left unread).
Failures become KernelError, saying what could not be done and why.
"""

import contextlib
import errno
import ipaddress
import itertools
import os
import socket
import struct
import threading

from pyroute2 import IPRoute, IPRSocket
from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink import NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from kernel.errors import KernelError
from kernel.wire import attribute, encode_message

MAIN_TABLE = 254

# How IPRoute.<kind>(command) builds each change sent by Netlink.change: the
# message, its type and pyroute2's request mode (the flags).
_REQUESTS = {
    ('link', 'add'): (ifinfmsg, RTM_NEWLINK, 'create'),
    ('link', 'del'): (ifinfmsg, RTM_DELLINK, 'req'),
    ('addr', 'replace'): (ifaddrmsg, RTM_NEWADDR, 'replace'),
}
# Routes and neighbours, the many changes of the agent's syncs, are encoded
# here: pyroute2's request filters took 0.2 ms a message.  The same fields
# and attributes as IPRoute.route/neigh (tests/kernel/test_netlink.py).
_ENCODED = {
    ('route', 'add'): (RTM_NEWROUTE, 'create'),
    ('route', 'replace'): (RTM_NEWROUTE, 'replace'),
    ('route', 'del'): (RTM_DELROUTE, 'req'),
    ('neigh', 'replace'): (RTM_NEWNEIGH, 'replace'),
    ('neigh', 'del'): (RTM_DELNEIGH, 'req'),
}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
_RTM_GETROUTE, _RTM_GETNEIGH, _NLMSG_DONE, _NLM_F_REQUEST, _NLM_F_DUMP = 26, 30, 3, 1, 0x300
# The fixed part of each kind's messages (rtmsg, ndmsg), as struct formats.
_HEADERS = {'route': (_RTM_GETROUTE, '=BBBBBBBBI'), 'neigh': (_RTM_GETNEIGH, '=BxxxiHBB')}
_DUMP_BUFFER = 1 << 20
RT_TYPES = {'unicast': 1, 'blackhole': 6}  # route types by name
_RT_SCOPES = {'universe': 0, 'link': 253}
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15  # route attributes
NDA_DST, NDA_LLADDR = 1, 2  # neighbour attributes
_RTPROT_STATIC, _NUD_PERMANENT = 4, 0x80
# Messages per write: their acks (each quoting its request) must fit the
# socket's receive buffer.
_AT_ONCE = 256


class Netlink:
    """One thread's netlink: an ``IPRSocket`` for changes, sent and acked
    without an event loop, and an ``IPRoute`` for queries, opened on first
    use."""

    def __init__(self):
        self.socket = IPRSocket()
        self._ipr = None
        self._dumps = None  # a plain netlink socket for dumps, opened on first use
        self._sequence = itertools.count()
        self._closed = False

    @property
    def ipr(self):
        if self._ipr is None:
            self._ipr = IPRoute()
        return self._ipr

    def close(self):
        if not self._closed:  # a nested block's failure closed it already
            self._closed = True
            self.socket.close()
            if self._ipr is not None:
                self._ipr.close()
            if self._dumps is not None:
                self._dumps.close()

    def message(self, kind, command, kwarg):
        """The encoded request ``IPRoute.<kind>(command, **kwarg)`` sends:
        (its sequence number, its bytes)."""
        seq = next(self._sequence) % 0xFFFFFFFF + 1
        if (kind, command) in _ENCODED:
            msg_type, mode = _ENCODED[kind, command]
            body = (_route if kind == 'route' else _neighbour)(command, dict(kwarg))
            return seq, encode_message(msg_type, NetlinkRequest.flags[mode], seq, body)
        msg_class, msg_type, mode = _REQUESTS[kind, command]
        request = NetlinkRequest(
            self.socket, msg_class(),
            request_filter=get_arguments_processor(kind, command, kwarg),
            msg_type=msg_type, msg_flags=NetlinkRequest.flags[mode], msg_seq=seq,
        )
        request.msg.encode()
        return seq, request.msg.data

    def dump(self, kind, family):
        """Every route ('route') or neighbour, FDB entry included ('neigh'),
        of the family (AF_BRIDGE: FDB entries) as (its fixed part's fields,
        {attribute number: bytes}), read and parsed here: pyroute2's parser
        took 0.12 ms a message, which the agent's resyncs paid for every
        route on the host (a thousand containers' too) twice a minute."""
        msg_type, header = _HEADERS[kind]
        if self._dumps is None:
            self._dumps = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                        socket.NETLINK_ROUTE)
            self._dumps.bind((0, 0))
        seq = next(self._sequence) % 0xFFFFFFFF + 1
        body = struct.pack('=B', family) + bytes(11)  # the fixed part: the family, all else 0
        self._dumps.send(encode_message(msg_type, _NLM_F_REQUEST | _NLM_F_DUMP, seq, body))
        found = []
        while True:
            data = self._dumps.recv(_DUMP_BUFFER)
            at = 0
            while at + 16 <= len(data):
                length, kind_of, _, answer_to, _ = struct.unpack_from('=IHHII', data, at)
                if length < 16 or at + length > len(data):
                    raise OSError(errno.EBADMSG, f'a malformed netlink message ({length} bytes)')
                if answer_to == seq:
                    if kind_of in (_NLMSG_DONE, NLMSG_ERROR):  # DONE carries the dump's error
                        error = -struct.unpack_from('=i', data, at + 16)[0] if length >= 20 else 0
                        if error > 0:
                            raise OSError(error, os.strerror(error))
                        if kind_of == _NLMSG_DONE:
                            return found
                    elif data[at + 16] == family:  # a kernel without the family dumps all
                        found.append((struct.unpack_from(header, data, at + 16),
                                      _attributes(data, at + 28, at + length)))
                at += (length + 3) & ~3

    def send(self, messages):
        """Send the messages, a few hundred to a write, and wait for every
        ack; each one's error (None when done), in order.  The kernel
        handles each message on its own, the next ones too after a
        failure."""
        errors = []
        for i in range(0, len(messages), _AT_ONCE):
            errors += self._send(messages[i:i + _AT_ONCE])
        return errors

    def _send(self, messages):
        errors = {seq: False for seq, _ in messages}
        self.socket.send(b''.join(data for _, data in messages))
        waiting = len(errors)
        while waiting:
            for reply in self.socket.get():
                header = reply['header']
                # Acks only, of these messages (not subscribed to events).
                if header['type'] == NLMSG_ERROR and errors.get(header['sequence_number']) is False:
                    errors[header['sequence_number']] = header['error']
                    waiting -= 1
        return list(errors.values())

    def change(self, changes, ok=()):
        """Make the changes, (action, kind, command, kwarg) each, in one send;
        raise the first failure but those with an errno in ``ok`` as a
        KernelError naming its action.  Returns each one's error."""
        messages = []
        for action, kind, command, kwarg in changes:
            try:
                messages.append(self.message(kind, command, kwarg))
            except ValueError as e:
                raise refused(action, e) from e
        try:
            errors = self.send(messages)
        except OSError as e:
            raise refused(changes[0][0], e) from e
        for (action, *_), error in zip(changes, errors):
            if error is not None and getattr(error, 'code', None) not in ok:
                raise refused(action, error) from error
        return errors


def _route(command, kwarg):
    """rtmsg and attributes of a route request (IPRoute.route's keywords:
    dst, table, and proto, type, scope, flags, family, gateway, oif)."""
    dst = ipaddress.ip_network(kwarg.pop('dst'))
    gateway, oif = kwarg.pop('gateway', None), kwarg.pop('oif', None)
    table = kwarg.pop('table')
    default = (0, 0) if command == 'del' else (_RTPROT_STATIC, 'unicast')
    proto, kind = kwarg.pop('proto', default[0]), kwarg.pop('type', default[1])
    scope, flags = kwarg.pop('scope', 0), kwarg.pop('flags', 0)
    family = kwarg.pop('family', _AF[dst.version])
    if kwarg:
        raise ValueError(f'unexpected route fields {sorted(kwarg)}')
    body = struct.pack('=BBBBBBBBI', family, dst.prefixlen, 0, 0, table if table < 256 else 0,
                       proto, _RT_SCOPES.get(scope, scope), RT_TYPES.get(kind, kind), flags)
    body += attribute(RTA_DST, dst.network_address.packed)
    body += attribute(RTA_TABLE, struct.pack('=I', table))
    if gateway is not None:
        body += attribute(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    if oif is not None:
        body += attribute(RTA_OIF, struct.pack('=I', oif))
    return body


def _neighbour(command, kwarg):
    """ndmsg and attributes of a neighbour (or, family AF_BRIDGE, FDB)
    request (IPRoute.neigh's keywords: ifindex, dst, lladdr, and family,
    state, flags)."""
    dst = ipaddress.ip_address(kwarg.pop('dst'))
    lladdr = bytes.fromhex(kwarg.pop('lladdr').replace(':', ''))
    index, family = kwarg.pop('ifindex'), kwarg.pop('family', _AF[dst.version])
    state, flags = kwarg.pop('state', _NUD_PERMANENT), kwarg.pop('flags', 0)
    if kwarg:
        raise ValueError(f'unexpected neighbour fields {sorted(kwarg)}')
    return (struct.pack('=BxxxiHBB', family, index, state, flags, 0)
            + attribute(NDA_DST, dst.packed) + attribute(NDA_LLADDR, lladdr))


def _attributes(data, at, end):
    found = {}
    while at + 4 <= end:
        size, number = struct.unpack_from('=HH', data, at)
        if size < 4:
            break
        found[number & 0x3FFF] = data[at + 4:at + size]  # without the nested and byte-order flags
        at += (size + 3) & ~3
    return found


_threads = threading.local()


@contextlib.contextmanager
def rtnl():
    """This thread's Netlink, closed when a failure escapes the block."""
    nl = getattr(_threads, 'nl', None)
    if nl is None or _threads.pid != os.getpid():
        nl = _threads.nl = Netlink()
        _threads.pid = os.getpid()
    try:
        yield nl
    except BaseException:
        if getattr(_threads, 'nl', None) is nl:
            _threads.nl = None
        nl.close()
        raise


@contextlib.contextmanager
def iproute(action):
    """This thread's ``IPRoute``; a netlink or system failure escaping the
    block becomes KernelError("could not <action>: ...")."""
    with rtnl() as nl:
        try:
            yield nl.ipr
        except (NetlinkError, OSError, ValueError) as e:
            raise refused(action, e) from e


def refused(action, exc) -> KernelError:
    """The KernelError saying that `action` failed, and the kernel's why."""
    if isinstance(exc, NetlinkError):
        reason = f'{exc.args[1] if len(exc.args) > 1 else exc} (errno {exc.code})'
    elif isinstance(exc, OSError) and exc.strerror:
        reason = f'{exc.strerror} (errno {exc.errno})'
    else:
        reason = str(exc)
    return KernelError(f'could not {action}: {reason}')


def name(index):
    """The name of the interface with this index, None when there is none."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None


def index(ifname):
    """The interface's index, None when there is no such interface (the
    only way if_nametoindex fails, short of running out of descriptors;
    Python reports every failure alike)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        return None
