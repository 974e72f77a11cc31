"""nftables through libnftables, in this process: nft's own parser and
netlink transactions without a fork and exec of nft for each change.  A
script runs as `nft -f` runs it: one transaction, all of it or nothing.

libnftables comes with nft itself (Debian's nftables package depends on
libnftables1, which the plugin image installs with it), so there is no
fallback to the nft program.

Elements of address sets and interface verdict maps (`inet_elements`),
and chains flushed and refilled with rules agent/nft_expressions.py
encodes (`inet_rules`), go through nfnetlink directly, one transaction
too: before a transaction that adds a rule libnftables 1.0 lists every
chain and set of every table, 1.3 ms at 400 chains and 350 sets, where the
elements themselves take 0.05 ms.  A remote endpoint coming or going, the
change a large cluster makes most, changes address sets alone; a local one
whose policies and profiles another endpoint here has too, an interface
map's elements and address sets alone; a policy's rules changing, its
chains' rules and address sets alone.
"""

import ctypes
import ctypes.util
import functools
import ipaddress
import itertools
import os
import re
import socket
import struct
import threading
import weakref

from agent.nft_expressions import ANONYMOUS, Rule
from kernel.errors import KernelError
from kernel.wire import attribute, encode_message

# libnftables does not say that two contexts may run at once; a transaction
# takes milliseconds, so the policy engine and the interception take turns.
_LOCK = threading.Lock()
_ERROR_LINES = 6


@functools.cache
def library() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise KernelError(f"libnftables is not installed ({exc}); "
                          "install nftables (libnftables1)") from exc
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    for buffer in ("error", "output"):
        getattr(lib, f"nft_ctx_buffer_{buffer}").argtypes = [ctypes.c_void_p]
        getattr(lib, f"nft_ctx_get_{buffer}_buffer").restype = ctypes.c_char_p
        getattr(lib, f"nft_ctx_get_{buffer}_buffer").argtypes = [ctypes.c_void_p]
    return lib


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"))


def release_freed_memory() -> None:
    """Give the system back what this process's allocator holds freed: the
    parse of a script and each transaction's listing of the table leave
    many small blocks that glibc keeps for reuse (a whole table written at
    1,000 endpoints: 14 MB).  About 1 ms; nothing where libc is not glibc."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def available() -> bool:
    try:
        library()
        return True
    except KernelError:
        return False


class NftContext:
    """One libnftables context.  Its netlink socket is opened in the network
    namespace of the thread that makes it, and a table flagged `owner` lives
    as long as the context does (close, or the end of the process)."""

    def __init__(self):
        lib = self.lib = library()
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_error(self.ctx)
        lib.nft_ctx_buffer_output(self.ctx)  # `list` output is not ours to print
        self._free = weakref.finalize(self, lib.nft_ctx_free, self.ctx)

    def run(self, script: str) -> str:
        """Run a script; its output (of `list` commands).  KernelError with
        nft's first error lines when it is refused."""
        # Read from a file, not from a buffer: libnftables 1.0 then quotes
        # the failing line in its error, not the script's first line.
        fd = os.memfd_create("nft-script", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
        try:
            data = script.encode()
            while data:
                data = data[os.write(fd, data):]
            with _LOCK:
                failed = self.lib.nft_run_cmd_from_filename(self.ctx, path.encode())
                # Both, every time: libnftables appends to a buffer until it is read.
                output = self.lib.nft_ctx_get_output_buffer(self.ctx) or b""
                error = self.lib.nft_ctx_get_error_buffer(self.ctx) or b""
        finally:
            os.close(fd)
        if failed:
            lines = error.decode(errors="replace").replace(path + ":", "line ").strip()
            raise KernelError("nft: " + ("\n".join(lines.splitlines()[:_ERROR_LINES])
                                         or "failed"))
        return output.decode(errors="replace")

    def close(self) -> None:
        self._free()  # closes the socket: the kernel drops an `owner` table


_per_thread = threading.local()


def _this_netns(slot: str, make):
    """This thread's `slot`, made by make() at its first use in the
    thread's network namespace: a netlink socket acts in the namespace it
    was made in, so a thread that moved since (setns), or a child forked
    from it that joined another, gets one of its own there."""
    netns = os.stat("/proc/thread-self/ns/net").st_ino
    made = getattr(_per_thread, slot, None)
    if made is None or made[0] != netns:
        made = (netns, make())
        setattr(_per_thread, slot, made)
    return made[1]


def run(script: str) -> str:
    """Run a script with this thread's context."""
    return _this_netns("nft", NftContext).run(script)


# nfnetlink (linux/netfilter/nfnetlink.h, nf_tables.h)
_NETLINK_NETFILTER, _NFNL_SUBSYS_NFTABLES, _NFPROTO_INET = 12, 10, 1
_BATCH_BEGIN, _BATCH_END, _NLMSG_ERROR = 0x10, 0x11, 2
_NEWRULE, _DELRULE = _NFNL_SUBSYS_NFTABLES << 8 | 6, _NFNL_SUBSYS_NFTABLES << 8 | 8
_NEWSET = _NFNL_SUBSYS_NFTABLES << 8 | 9
_NEWSETELEM, _DELSETELEM = _NFNL_SUBSYS_NFTABLES << 8 | 12, _NFNL_SUBSYS_NFTABLES << 8 | 14
_REQUEST, _ACK, _CREATE, _APPEND, _NESTED = 0x1, 0x4, 0x400, 0x800, 0x8000
_RULE_TABLE, _RULE_CHAIN, _RULE_EXPRESSIONS = 1, 2, 4  # NFTA_RULE_*
_SET_NAME, _SET_ID = 2, 10  # NFTA_SET_*; the table, 1, is as in a rule
_LIST_TABLE, _LIST_SET, _LIST_ELEMENTS, _LIST_SET_ID = 1, 2, 3, 4  # NFTA_SET_ELEM_LIST_*
_LIST_ELEM, _ELEM_KEY, _ELEM_DATA = 1, 1, 2  # NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, _DATA
_DATA_VALUE, _DATA_VERDICT = 1, 2  # NFTA_DATA_*
_VERDICT_CODE, _VERDICT_CHAIN, _GOTO = 1, 2, -4  # NFTA_VERDICT_*, NFT_GOTO
_IFNAMSIZ = 16  # an ifname key's bytes: the name, NUL-padded
_INTERFACE_ELEMENT = re.compile(r'"(.+)" : goto (\S+)')  # interface_element()'s
_PER_MESSAGE = 1000  # elements
_SOL_NETLINK, _NETLINK_CAP_ACK, _SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 270, 10, 32, 33
_REFUSALS_BUFFER = 4 << 20


class _Nfnetlink:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  _NETLINK_NETFILTER)
        self.sock.settimeout(5.0)
        # A refusal brings only the header of the message back (not the
        # rules sent), into room for thousands: when one message of a batch
        # fails, those after it that depend on it fail too.
        self.sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        self._buffer(_SO_RCVBUFFORCE, socket.SO_RCVBUF, _REFUSALS_BUFFER)
        self._send_buffer = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self.sock.bind((0, 0))
        self._sequence = itertools.count(1)
        self._free = weakref.finalize(self, self.sock.close)

    def _buffer(self, force: int, option: int, size: int) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:  # without CAP_NET_ADMIN: up to net.core.[rw]mem_max
            self.sock.setsockopt(socket.SOL_SOCKET, option, size)

    def transaction(self, messages: list[tuple[int, int, bytes]]) -> None:
        """(type, flags, payload) of each, between a batch's begin and end,
        sent at once; the last one acked, or KernelError with the first
        refusal (the kernel then applied none).  The kernel goes through
        the whole batch whatever fails, and sends each refusal before the
        last one's ack."""
        if not messages:
            return
        subsystem = struct.pack("=BB", 0, 0) + struct.pack(">H", _NFNL_SUBSYS_NFTABLES)
        first = next(self._sequence)
        data = [encode_message(_BATCH_BEGIN, _REQUEST, first, subsystem)]
        for number, (kind, flags, payload) in enumerate(messages, 1):
            last = next(self._sequence)
            data.append(encode_message(
                kind, _REQUEST | flags | (_ACK if number == len(messages) else 0), last,
                struct.pack("=BBH", _NFPROTO_INET, 0, 0) + payload))
        data.append(encode_message(_BATCH_END, _REQUEST, next(self._sequence), subsystem))
        refusal, waiting = None, True
        batch = b"".join(data)
        try:
            if len(batch) > self._send_buffer:  # one send, or EMSGSIZE: a batch is one
                self._buffer(_SO_SNDBUFFORCE, socket.SO_SNDBUF, len(batch))
                self._send_buffer = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self.sock.send(batch)
            while waiting:
                reply = memoryview(self.sock.recv(65536))
                while len(reply) >= 16:
                    length, kind, _, seq, _ = struct.unpack_from("=IHHII", reply)
                    if kind == _NLMSG_ERROR and first <= seq:
                        error = -struct.unpack_from("=i", reply, 16)[0]
                        if error and refusal is None:
                            refusal = error
                        if seq in (first, last):  # the batch itself refused, or done
                            waiting = False
                    reply = reply[(length + 3) & ~3:]
        except OSError as exc:
            raise KernelError(f"nfnetlink: {exc}") from exc
        if refusal is not None:
            raise KernelError(f"nfnetlink: the transaction was refused: "
                              f"{os.strerror(refusal)} (errno {refusal})")


INTERFACE_MAP = "ifname : verdict"  # a map of interfaces to the chains they go to


def interface_element(interface: str, chain: str) -> str:
    return f'"{interface}" : goto {chain}'


def inet_elements(table: str,
                  changes: list[tuple[str, str, frozenset[str], frozenset[str]]]) -> None:
    """Each (set or map of the inet table, its type, elements added,
    elements removed) in one transaction of this thread's nfnetlink socket
    (see the module's docstring); removals first, so that an interface may
    come back with another verdict.  Elements are written as in nft: an
    address of an ipv4_addr or ipv6_addr set, '"<interface>" : goto
    <chain>' of an "ifname : verdict" map."""
    _this_netns("nfnetlink", _Nfnetlink).transaction(_element_messages(table, changes))


def inet_rules(table: str, changes: list[tuple[str, str, frozenset[str], frozenset[str]]],
               chains: dict[str, list[Rule]]) -> None:
    """inet_elements' changes, then each chain of the inet table flushed
    and given its rules (as agent/nft_expressions.py encodes them, with
    the sets of their own each rule looks up), all in one transaction."""
    head = attribute(_RULE_TABLE, table.encode() + b"\0")
    messages = _element_messages(table, changes)
    set_ids = itertools.count(1)
    for chain, rules in chains.items():
        named = head + attribute(_RULE_CHAIN, chain.encode() + b"\0")
        messages.append((_DELRULE, 0, named))  # a chain named, no handle: its every rule
        for rule in rules:
            ids = []
            for anonymous in rule.sets:
                ids.append(next(set_ids))
                set_id = struct.pack(">I", ids[-1])
                messages.append((_NEWSET, _CREATE, head + attribute(_SET_NAME, ANONYMOUS)
                                 + anonymous.attributes + attribute(_SET_ID, set_id)))
                messages.extend((_NEWSETELEM, _CREATE, head + attribute(_LIST_SET, ANONYMOUS)
                                 + attribute(_LIST_SET_ID, set_id)
                                 + attribute(_LIST_ELEMENTS | _NESTED, elements))
                                for elements in anonymous.elements)
            messages.append((_NEWRULE, _CREATE | _APPEND, named + attribute(
                _RULE_EXPRESSIONS | _NESTED, rule.expressions(ids))))
    _this_netns("nfnetlink", _Nfnetlink).transaction(messages)


def _element_messages(table: str, changes) -> list[tuple[int, int, bytes]]:
    head = attribute(_LIST_TABLE, table.encode() + b"\0")
    messages = []
    for name, kind, added, removed in changes:
        for verb, flags, elements in ((_DELSETELEM, 0, removed), (_NEWSETELEM, _CREATE, added)):
            elements = sorted(elements)
            for i in range(0, len(elements), _PER_MESSAGE):
                encoded = b"".join(attribute(_LIST_ELEM | _NESTED, _element(kind, e, verb))
                                   for e in elements[i:i + _PER_MESSAGE])
                messages.append((verb, flags, head + attribute(_LIST_SET, name.encode() + b"\0")
                                 + attribute(_LIST_ELEMENTS | _NESTED, encoded)))
    return messages


def _element(kind: str, element: str, verb: int) -> bytes:
    if kind != INTERFACE_MAP:
        return attribute(_ELEM_KEY | _NESTED,
                         attribute(_DATA_VALUE, ipaddress.ip_address(element).packed))
    interface, chain = _INTERFACE_ELEMENT.fullmatch(element).groups()
    key = attribute(_ELEM_KEY | _NESTED,
                    attribute(_DATA_VALUE, interface.encode().ljust(_IFNAMSIZ, b"\0")))
    if verb == _DELSETELEM:  # the key alone names it
        return key
    verdict = attribute(_VERDICT_CODE, struct.pack(">i", _GOTO)) \
        + attribute(_VERDICT_CHAIN, chain.encode() + b"\0")
    return key + attribute(_ELEM_DATA | _NESTED, attribute(_DATA_VERDICT | _NESTED, verdict))
