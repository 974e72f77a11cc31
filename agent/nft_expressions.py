"""nftables rules as the kernel takes them (nf_tables' expressions over
nfnetlink), for the rules our policy compiler writes in its chains: a
policy's rule changing is then a flush and refill of its chains in one
nfnetlink transaction (agent/nftables.py inet_rules), not a libnftables
script, which lists every chain and set of every table before it runs
(1.3 ms at 400 chains and 350 sets, more than the kernel takes to apply
a policy's rules).

`encode(rule)` encodes a rule exactly as nft 1.0 does, byte for byte
(tests/agent/test_nft_expressions.py compares the kernel's dump of both),
anonymous sets of ports or addresses with it, or returns None for anything
else: then the caller writes a script.  So forms where nft would merge or
add matches of its own are None: two matches of adjacent header fields
(nft loads them as one), a transport protocol's own header (`udp dport`,
which brings nft's `meta l4proto` dependency), an ICMP type without its
`meta l4proto` before it, a name where nft takes a number, a set of ICMP
types or of concatenations.
"""

import functools
import ipaddress
import re
import struct
from dataclasses import dataclass

from kernel.wire import attribute

_NESTED = 0x8000
_REG_1, _REG_VERDICT = 1, 0  # NFT_REG_1, NFT_REG_VERDICT
_LIST_ELEM, _EXPR_NAME, _EXPR_DATA = 1, 1, 2  # NFTA_LIST_ELEM, NFTA_EXPR_*
_DATA_VALUE, _DATA_VERDICT = 1, 2  # NFTA_DATA_*
_VERDICT_CODE, _VERDICT_CHAIN = 1, 2  # NFTA_VERDICT_*
_VERDICTS = {"drop": 0, "accept": 1, "jump": -3, "goto": -4, "return": -5}
_CMP = {"==": 0, "!=": 1, "<=": 3, ">=": 5}  # NFT_CMP_EQ, _NEQ, _LTE, _GTE
_META = {"mark": 3, "nfproto": 15, "l4proto": 16}  # NFT_META_*
_CT = {"state": 0, "mark": 3}  # NFT_CT_*
_CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
_NFPROTO = {"ipv4": 2, "ipv6": 10}
_NETWORK, _TRANSPORT = 1, 2  # NFT_PAYLOAD_NETWORK_HEADER, _TRANSPORT_HEADER
# (protocol, field) -> (offset, length) in the network header
_ADDRESSES = {("ip", "saddr"): (12, 4), ("ip", "daddr"): (16, 4),
              ("ip6", "saddr"): (8, 16), ("ip6", "daddr"): (24, 16)}
_ICMP = {"icmp": 1, "icmpv6": 58}  # each protocol's number: the match nft needs before
_PORTS = {"sport": 0, "dport": 2}  # offsets in the transport header
_SET = re.compile(r"@[A-Za-z0-9_.-]+")
_LOG = re.compile(r'log prefix "([^"\\]*)" level notice')
_NOTICE = 5
ANONYMOUS = b"__set%d\0"  # the name of a set the kernel numbers
_LOOKUP_SET, _LOOKUP_SREG, _LOOKUP_SET_ID, _LOOKUP_FLAGS = 1, 2, 4, 5  # NFTA_LOOKUP_*
_SET_FLAGS, _SET_KEY_TYPE, _SET_KEY_LEN, _SET_DESC, _SET_USERDATA = 3, 4, 5, 9, 13  # NFTA_SET_*
_ANONYMOUS_CONSTANT = 0x3  # NFT_SET_ANONYMOUS | NFT_SET_CONSTANT
_ELEMENTS_AT_ONCE = 1000  # a set's elements a message: 36 KB of IPv6 addresses
_EXPRESSIONS_MAX = 65000  # a rule's expressions are one attribute, of at most 64 KiB
_KEY_TYPES = {2: 13, 4: 7, 16: 8}  # key length -> nft's inet_service, ipv4_addr, ipv6_addr
# (base, offset) -> nft's protocol and field numbers (src/proto.c), which it
# keeps in an anonymous set's user data to list the set as it was written
_TYPEOF = {(_TRANSPORT, 0): (11, 1), (_TRANSPORT, 2): (11, 2), (_NETWORK, 12): (12, 11),
           (_NETWORK, 16): (12, 12), (_NETWORK, 8): (13, 8), (_NETWORK, 24): (13, 9)}


@dataclass(frozen=True)
class AnonymousSet:
    """A set of a rule's own: NEWSET's attributes but its table and id,
    and its elements as payloads of NFTA_SET_ELEM_LIST_ELEMENTS, one a
    message (an attribute holds at most 64 KiB)."""

    attributes: bytes
    elements: tuple[bytes, ...]


@dataclass(frozen=True)
class Rule:
    """A rule's expressions, split where it looks up a set of its own:
    sets[i] (inverted[i]: a `!=` lookup) comes between parts[i] and parts[i + 1]."""

    parts: tuple[bytes, ...]
    sets: tuple[AnonymousSet, ...] = ()
    inverted: tuple[bool, ...] = ()

    def expressions(self, set_ids=()) -> bytes:
        """NFTA_RULE_EXPRESSIONS' payload, each set of its own by the id
        given to it in the transaction that makes it."""
        lookups = [_expr("lookup", _u32(_LOOKUP_SREG, _REG_1),
                         attribute(_LOOKUP_SET, ANONYMOUS), _u32(_LOOKUP_SET_ID, set_id),
                         *([_u32(_LOOKUP_FLAGS, 1)] if inverted else []))
                   for set_id, inverted in zip(set_ids, self.inverted, strict=True)]
        return b"".join(part + lookup for part, lookup in zip(self.parts, [*lookups, b""]))


@functools.lru_cache(maxsize=2048)  # a chain refilled is mostly the rules it had
def encode(rule: str) -> Rule | None:
    """One rule of ours as the kernel takes it, or None (see the module's
    docstring)."""
    try:
        return _Rule(rule).encode()
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _expr(name: str, *attributes: bytes) -> bytes:
    return attribute(_LIST_ELEM | _NESTED, attribute(_EXPR_NAME, name.encode() + b"\0")
                     + attribute(_EXPR_DATA | _NESTED, b"".join(attributes)))


def _u32(kind: int, value: int) -> bytes:
    return attribute(kind, struct.pack(">I", value))


def _value(kind: int, data: bytes) -> bytes:
    return attribute(kind | _NESTED, attribute(_DATA_VALUE, data))


# The expressions below recur from rule to rule: kept, a rule encodes in
# 9 us, not 21.
@functools.lru_cache(maxsize=1024)
def _cmp(op: str, data: bytes) -> bytes:
    return _expr("cmp", _u32(1, _REG_1), _u32(2, _CMP[op]), _value(3, data))


@functools.lru_cache(maxsize=1024)
def _payload(base: int, offset: int, length: int) -> bytes:
    return _expr("payload", _u32(1, _REG_1), _u32(2, base), _u32(3, offset), _u32(4, length))


@functools.lru_cache(maxsize=1024)
def _meta(key: str) -> bytes:
    return _expr("meta", _u32(1, _REG_1), _u32(2, _META[key]))


@functools.lru_cache(maxsize=1024)
def _bitwise(mask: bytes, xor: bytes) -> bytes:
    return _expr("bitwise", _u32(1, _REG_1), _u32(2, _REG_1), _u32(3, len(mask)),
                 _value(4, mask), _value(5, xor))


def _mark_bits(mask: int, xor: int = 0) -> bytes:
    """_bitwise of a mark or ct state: a 32-bit word in host order."""
    return _bitwise(struct.pack("=I", mask), struct.pack("=I", xor))


@functools.lru_cache(maxsize=1024)
def _verdict(code: str, chain: str | None = None) -> bytes:
    verdict = _u32(_VERDICT_CODE, _VERDICTS[code] & 0xFFFFFFFF)
    if chain is not None:
        verdict += attribute(_VERDICT_CHAIN, chain.encode() + b"\0")
    return _expr("immediate", _u32(1, _REG_VERDICT),
                 attribute(2 | _NESTED, attribute(_DATA_VERDICT | _NESTED, verdict)))


def _number(token: str, bits: int, base: int = 10) -> int:
    """A decimal (base 10) or a decimal or 0x-hexadecimal (base 0) of so many bits."""
    try:
        value = int(token, base)
    except ValueError:
        raise _Unsupported(token) from None
    if value < 0 or value >> bits:
        raise _Unsupported(token)
    return value


def _network(word: str, length: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(word)
    except ValueError:
        raise _Unsupported(word) from None
    if net.max_prefixlen != length * 8:
        raise _Unsupported(word)
    return net


def _address(word: str, length: int) -> bytes:
    net = _network(word, length)
    if net.prefixlen != net.max_prefixlen:
        raise _Unsupported(f"{word} in a set: an interval set")
    return net.network_address.packed


class _Rule:
    """One rule's words, read left to right into expressions."""

    def __init__(self, rule: str):
        log = _LOG.search(rule)
        if log is not None:  # its prefix may hold spaces: the one quoted word
            if log.end() != len(rule):
                raise _Unsupported(rule)
            rule, self.log = rule[:log.start()], log.group(1)
        else:
            self.log = None
        self.words = rule.split()
        self.at = 0
        self.out: list[bytes] = []
        self.parts: list[bytes] = []
        self.sets: list[AnonymousSet] = []
        self.inverted: list[bool] = []
        self.nfproto: str | None = None
        self.l4proto: int | None = None
        self.loads: list[tuple[int, int, int]] = []  # (base, offset, length) matched

    def take(self) -> str:
        if self.at >= len(self.words):
            raise _Unsupported("end of rule")
        self.at += 1
        return self.words[self.at - 1]

    def op(self) -> str:
        if self.at < len(self.words) and self.words[self.at] == "!=":
            self.at += 1
            return "!="
        return "=="

    def encode(self) -> Rule:
        if not self.words and self.log is None:
            raise _Unsupported("an empty rule")
        while self.at < len(self.words):
            word = self.take()
            if word in _VERDICTS:
                self.verdict(word)
            elif word == "meta":
                self.meta()
            elif word == "ct":
                self.ct()
            elif word in ("ip", "ip6"):
                self.address(word)
            elif word == "th":
                self.port()
            elif word in _ICMP:
                self.icmp(word)
            else:
                raise _Unsupported(word)
        if self.log is not None:
            self.out.append(_expr("log", attribute(2, self.log.encode() + b"\0"),
                                  _u32(5, _NOTICE)))
        parts = (*self.parts, b"".join(self.out))
        if sum(map(len, parts)) + 64 * len(self.sets) > _EXPRESSIONS_MAX:
            raise _Unsupported("more expressions than an attribute holds")
        return Rule(parts, tuple(self.sets), tuple(self.inverted))

    def verdict(self, word: str) -> None:
        chain = self.take() if word in ("jump", "goto") else None
        if self.at != len(self.words) or self.log is not None:
            raise _Unsupported("a verdict not last")
        self.out.append(_verdict(word, chain))

    def meta(self) -> None:
        key = self.take()
        if key == "nfproto":
            if self.nfproto is not None:
                raise _Unsupported("nfproto twice")
            self.nfproto = self.take()
            if self.nfproto not in _NFPROTO:
                raise _Unsupported(self.nfproto)
            self.out += [_meta(key), _cmp("==", bytes([_NFPROTO[self.nfproto]]))]
        elif key == "l4proto":
            op = self.op()
            number = _number(self.take(), 8)
            if op == "==":
                self.l4proto = number
            self.out += [_meta(key), _cmp(op, bytes([number]))]
        elif key == "mark":
            self.mark(_meta("mark"), settable=True)
        else:
            raise _Unsupported(key)

    def mark(self, load: bytes, settable: bool = False) -> None:
        """`<load> & X == Y`, or (meta mark only) `set meta mark | X`."""
        word = self.take()
        if word == "&":
            mask = _number(self.take(), 32, 0)
            if self.take() != "==":
                raise _Unsupported("a mark's test")
            value = _number(self.take(), 32, 0)
            self.out += [load, _mark_bits(mask), _cmp("==", struct.pack("=I", value))]
        elif word == "set" and settable and self.words[self.at:self.at + 3] == [
                "meta", "mark", "|"]:
            self.at += 3
            bits = _number(self.take(), 32, 0)
            self.out += [_meta("mark"), _mark_bits(0xFFFFFFFF & ~bits, bits),
                         _expr("meta", _u32(2, _META["mark"]), _u32(3, _REG_1))]
        else:
            raise _Unsupported(word)

    def ct(self) -> None:
        key = self.take()
        load = _expr("ct", _u32(1, _REG_1), _u32(2, _CT[key])) if key in _CT else None
        if key == "mark":
            self.mark(load)
        elif key == "state" and self.op() == "==":
            bits = 0
            for state in self.take().split(","):
                if state not in _CT_STATES:
                    raise _Unsupported(state)
                bits |= _CT_STATES[state]
            self.out += [load, _mark_bits(bits), _cmp("!=", bytes(4))]
        else:
            raise _Unsupported(key)

    def address(self, protocol: str) -> None:
        if self.nfproto != ("ipv4" if protocol == "ip" else "ipv6"):
            raise _Unsupported("an address without its family matched first")
        field = self.take()
        if (protocol, field) not in _ADDRESSES:
            raise _Unsupported(field)
        offset, length = _ADDRESSES[(protocol, field)]
        op, word = self.op(), self.take()
        if _SET.fullmatch(word):
            self.out += [_payload(_NETWORK, offset, length), _expr(
                "lookup", attribute(_LOOKUP_SET, word[1:].encode() + b"\0"),
                _u32(_LOOKUP_SREG, _REG_1), _u32(_LOOKUP_FLAGS, 1 if op == "!=" else 0))]
            return
        if word == "{":
            self.anonymous(op, _NETWORK, offset, length, lambda a: _address(a, length))
            return
        if "-" in word and op == "!=":  # a value alone, negated (compiler.py _none_of)
            first, _, last = word.partition("-")
            self.range(op, _NETWORK, offset, _address(first, length), _address(last, length))
            return
        net = _network(word, length)
        if net.prefixlen == net.max_prefixlen:
            self.constant(op, _NETWORK, offset, net.network_address.packed)
        elif net.prefixlen % 8 == 0 and net.prefixlen:  # whole bytes: those alone
            size = net.prefixlen // 8
            self.adjacent(_NETWORK, offset, size)
            self.out += [_payload(_NETWORK, offset, size),
                         _cmp(op, net.network_address.packed[:size])]
        elif net.prefixlen:
            self.adjacent(_NETWORK, offset, length)
            self.out += [_payload(_NETWORK, offset, length),
                         _bitwise(net.netmask.packed, bytes(length)),
                         _cmp(op, net.network_address.packed)]
        else:
            raise _Unsupported(word)

    def port(self) -> None:
        field = self.take()
        if field not in _PORTS:
            raise _Unsupported(field)
        op, word = self.op(), self.take()
        if word == "{":
            self.anonymous(op, _TRANSPORT, _PORTS[field], 2,
                           lambda p: struct.pack(">H", _number(p, 16)))
            return
        first, _, last = word.partition("-")
        low = _number(first, 16)
        if not last:
            self.constant(op, _TRANSPORT, _PORTS[field], struct.pack(">H", low))
            return
        high = _number(last, 16)
        self.range(op, _TRANSPORT, _PORTS[field], struct.pack(">H", low), struct.pack(">H", high))

    def range(self, op: str, base: int, offset: int, low: bytes, high: bytes) -> None:
        """From low to high (big endian, as the header holds them)."""
        if high < low:
            raise _Unsupported("a range that ends before it starts")
        load = _payload(base, offset, len(low))
        if op == "==":
            self.out += [load, _cmp(">=", low), _cmp("<=", high)]
        else:
            self.out += [load, _expr("range", _u32(1, _REG_1), _u32(2, 1), _value(3, low),
                                     _value(4, high))]

    def icmp(self, protocol: str) -> None:
        """A type, or a type and a code: nft loads those two as one."""
        if self.l4proto != _ICMP[protocol] or self.take() != "type":
            raise _Unsupported("icmp without its protocol matched first")
        op = self.op()
        data = bytes([_number(self.take(), 8)])
        if self.words[self.at:self.at + 2] == [protocol, "code"]:
            self.at += 2
            if op != "==" or self.op() != "==":
                raise _Unsupported("a type or code not equal")
            data += bytes([_number(self.take(), 8)])
        self.constant(op, _TRANSPORT, 0, data)

    def anonymous(self, op: str, base: int, offset: int, length: int, key) -> None:
        """A lookup in a set of the values after "{" (at least two, none
        twice), each encoded by key()."""
        values = []
        while (word := self.take()) != "}":
            values += [v for v in word.split(",") if v]
        keys = {key(v) for v in values}
        if len(values) < 2 or len(keys) != len(values):
            raise _Unsupported("a set of one, or of a value twice")
        protocol, field = _TYPEOF[(base, offset)]
        userdata = struct.pack("=BBI", 0, 4, 2) + struct.pack(  # big endian key; typeof payload
            "=BBBBIBBBBIBBI", 3, 20, 0, 4, 7, 1, 12, 0, 4, protocol, 1, 4, field)
        self.out.append(_payload(base, offset, length))
        self.parts.append(b"".join(self.out))
        self.out = []
        elements = [attribute(_LIST_ELEM | _NESTED, _value(1, k)) for k in sorted(keys)]
        self.sets.append(AnonymousSet(
            _u32(_SET_FLAGS, _ANONYMOUS_CONSTANT) + _u32(_SET_KEY_TYPE, _KEY_TYPES[length])
            + _u32(_SET_KEY_LEN, length) + attribute(_SET_DESC | _NESTED, _u32(1, len(keys)))
            + attribute(_SET_USERDATA, userdata),
            tuple(b"".join(elements[i:i + _ELEMENTS_AT_ONCE])
                  for i in range(0, len(elements), _ELEMENTS_AT_ONCE))))
        self.inverted.append(op == "!=")

    def constant(self, op: str, base: int, offset: int, data: bytes) -> None:
        self.adjacent(base, offset, len(data))
        self.out += [_payload(base, offset, len(data)), _cmp(op, data)]

    def adjacent(self, base: int, offset: int, length: int) -> None:
        """nft loads two matches of adjacent header fields against values
        as one, reordered; we leave any such rule to it, and one with a
        prefix beside a field too (nft 1.0 merges no prefix, but need not
        stay so)."""
        for other_base, other, size in self.loads:  # beside it, or the same bytes
            if other_base == base and other <= offset + length and offset <= other + size:
                raise _Unsupported("fields side by side")
        self.loads.append((base, offset, length))
