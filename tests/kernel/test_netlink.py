"""The one netlink idiom: each thread keeps its own socket between calls
(the driver's Join and the agent's route work alike), a failure that
escapes closes it so the next call starts afresh, and the failure is a
KernelError naming what could not be done; routes and neighbours encoded
as pyroute2's IPRoute encodes them.  Queries only, in pytest's own
namespace: nothing is changed."""

import errno
import struct
import threading

import pytest
from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from agent.routing import kernel as routing_kernel
from kernel import netlink
from kernel.errors import KernelError


def this_threads():
    with netlink.rtnl() as nl:
        return nl


def test_a_thread_keeps_its_socket_and_another_thread_has_its_own():
    first = this_threads()
    routing_kernel.read_routes()  # the agent's calls use it too
    assert routing_kernel.link_exists("lo")
    assert this_threads() is first
    other = []
    thread = threading.Thread(target=lambda: other.append(this_threads()))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_a_failure_is_a_kernel_error_and_the_next_call_starts_afresh():
    before = this_threads()
    with pytest.raises(KernelError) as refused:
        with netlink.iproute("look up calinowhere") as ipr:
            ipr.link("get", ifname="calinowhere")
    assert str(refused.value) == "could not look up calinowhere: No such device (errno 19)"
    assert this_threads() is not before


# What IPRoute.route(command, **kwarg) and IPRoute.neigh(...) send.
_PYROUTE2 = {
    ("route", "add"): (rtmsg, RTM_NEWROUTE, "create"),
    ("route", "replace"): (rtmsg, RTM_NEWROUTE, "replace"),
    ("route", "del"): (rtmsg, RTM_DELROUTE, "req"),
    ("neigh", "replace"): (ndmsg, RTM_NEWNEIGH, "replace"),
    ("neigh", "del"): (ndmsg, RTM_DELNEIGH, "req"),
}


def pyroute2_message(nl, kind, command, kwarg):
    msg_class, msg_type, mode = _PYROUTE2[kind, command]
    parameters = None
    if kind == "route":
        parameters = {"strict_check": nl.socket.status["strict_check"]}
        if command != "del":
            kwarg = {"proto": "static", "type": "unicast", **kwarg}
    request = NetlinkRequest(nl.socket, msg_class(), msg_type=msg_type, msg_seq=1,
                             request_filter=get_arguments_processor(kind, command, kwarg,
                                                                    parameters),
                             msg_flags=NetlinkRequest.flags[mode])
    request.msg.encode()
    return bytes(request.msg.data)


def fields(data):
    """(header but its sequence number, fixed part, attributes in any order)."""
    length, kind, flags, _, _ = struct.unpack_from("=IHHII", data)
    fixed = 12  # an rtmsg, an ndmsg
    attributes, at = [], 16 + fixed
    while at < length:
        size, number = struct.unpack_from("=HH", data, at)
        attributes.append((number, data[at + 4:at + size]))
        at += (size + 3) & ~3
    return (length, kind, flags), data[16:16 + fixed], sorted(attributes)


@pytest.mark.parametrize("kind, command, kwarg", [
    # the agent's: via a gateway, on a VXLAN device, blackhole, IPv6, removal
    ("route", "add", dict(dst="10.1.2.0/26", table=254, proto=80, type="unicast", family=2,
                          gateway="10.0.0.2")),
    ("route", "replace", dict(dst="10.1.2.0/26", table=254, proto=80, type="unicast",
                              family=2, gateway="10.0.0.2", oif=3, flags=4)),
    ("route", "add", dict(dst="10.1.2.0/26", table=254, proto=80, type="blackhole", family=2)),
    ("route", "add", dict(dst="fd00:1::/122", table=254, proto=80, type="unicast", family=10,
                          gateway="fd00::2")),
    ("route", "del", dict(dst="10.1.2.0/26", table=254, proto=80, type="blackhole", family=2)),
    # the driver's: a workload's host routes, added and removed
    ("route", "replace", dict(dst="10.1.2.3/32", oif=7, scope="link", table=254)),
    ("route", "replace", dict(dst="fd00::3/128", oif=7, table=254)),
    ("route", "del", dict(dst="10.1.2.3/32", table=254, scope="link", oif=7)),
    ("route", "del", dict(dst="fd00::3/128", table=254)),
    # ARP, IPv6 neighbour and FDB entries of the VXLAN device
    ("neigh", "replace", dict(ifindex=3, dst="10.0.0.9", lladdr="66:55:44:33:22:11",
                              state=0x80, family=2)),
    ("neigh", "del", dict(ifindex=3, dst="fd00::9", lladdr="66:55:44:33:22:11", state=0x80,
                          family=10)),
    ("neigh", "replace", dict(ifindex=3, dst="10.0.0.9", lladdr="66:55:44:33:22:11",
                              state=0xc0, family=7, flags=2)),
    ("neigh", "del", dict(ifindex=3, dst="fd00::9", lladdr="66:55:44:33:22:11", state=0xc0,
                          family=7, flags=2)),
])
def test_routes_and_neighbours_are_encoded_as_pyroute2_encodes_them(kind, command, kwarg):
    with netlink.rtnl() as nl:
        _, ours = nl.message(kind, command, kwarg)
        assert fields(ours) == fields(pyroute2_message(nl, kind, command, kwarg))


def test_a_route_with_fields_not_encoded_is_refused_not_half_sent():
    with netlink.rtnl() as nl, pytest.raises(ValueError, match="metrics"):
        nl.message("route", "add", dict(dst="10.1.2.0/26", table=254, metrics={"mtu": 1400}))


class _DumpingKernel:
    """A netlink socket answering a dump with messages made by answer(seq),
    for what this kernel does not do: dump every family to a request for
    one it lacks (booted with ipv6.disable=1), end a dump with an error."""

    def __init__(self, answer):
        self.answer, self.replies = answer, []

    def send(self, request):
        self.replies.append(self.answer(struct.unpack_from("=IHHII", request)[3]))

    def recv(self, _size):
        return self.replies.pop(0)

    def close(self):
        pass


def _route_message(seq, family, address):
    body = struct.pack("=BBBBBBBBI", family, 32, 0, 0, 254, 80, 0, 1, 0)
    body += struct.pack("=HH", 4 + len(address), 1) + address
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWROUTE, 2, seq, 0) + body


def _done(seq, error=0):
    return struct.pack("=IHHIIi", 20, 3, 2, seq, 0, -error)


def test_a_dump_keeps_the_family_asked_for_and_raises_the_error_it_ends_with():
    with netlink.rtnl() as nl:
        real = nl._dumps
        nl._dumps = _DumpingKernel(lambda seq: _route_message(seq, 2, bytes([10, 0, 0, 1]))
                                   + _route_message(seq, 10, bytes(16)) + _done(seq))
        assert [(fields[0], attrs) for fields, attrs in nl.dump("route", 10)] == [
            (10, {1: bytes(16)})]
        nl._dumps = _DumpingKernel(lambda seq: _route_message(seq, 2, bytes(4))
                                   + _done(seq, errno.EMSGSIZE))
        with pytest.raises(OSError) as cut:
            nl.dump("route", 2)
        assert cut.value.errno == errno.EMSGSIZE
        nl._dumps = _DumpingKernel(lambda seq: struct.pack("=IHHII", 8, 24, 2, seq, 0) + bytes(8))
        with pytest.raises(OSError, match="malformed"):
            nl.dump("route", 2)
        nl._dumps = real
