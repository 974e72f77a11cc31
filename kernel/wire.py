"""Netlink's wire format, shared by rtnetlink (kernel/netlink.py) and
nfnetlink (agent/nftables.py): a message's header, an attribute.  No
pyroute2 here: the names watchdog writes nftables elements without it."""

import struct


def encode_message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A netlink message: its header, then body."""
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def attribute(kind: int, payload: bytes) -> bytes:
    """A netlink attribute, padded to 4 bytes."""
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)
