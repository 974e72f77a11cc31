"""BIRD's control socket, as birdc speaks it: send one command, read its reply.

BIRD greets with `0001 BIRD 2.0.12 ready.`, then answers each command with
lines `NNNN-text` (a code, more lines follow), ` text` (more of the same
code) and a last `NNNN text` (B2 nest/cli.c cli_printf).  Codes 0xxx are
results, 1xxx table rows, 2xxx table headings, 8xxx and 9xxx errors
(B2 doc/reply_codes).  Each line must come within TIMEOUT seconds, as
calicoctl waits for BIRD.
"""

import re
import socket
from typing import NamedTuple

TIMEOUT = 2.0
_LINE = re.compile(r"^(\d{4})([ -])(.*)$")


class BirdUnavailable(Exception):
    """Nothing answers on the control socket: BIRD is not running there."""


class BirdError(Exception):
    """BIRD answered with an error code, or with lines its protocol does
    not have."""


class ReplyLine(NamedTuple):
    code: int
    text: str


def query(path: str, command: str, timeout: float = TIMEOUT) -> list[ReplyLine]:
    """BIRD's reply to command on the socket at path, every line with its
    code (the greeting left out).  BirdUnavailable when the socket does not
    accept the connection, BirdError on an error reply."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise BirdUnavailable(f"cannot connect to BIRD's control socket {path}: "
                                  f"{exc.strerror or exc}") from None
        lines = sock.makefile("r", encoding="utf-8", errors="replace", newline="\n")
        _read_reply(lines, path)  # the 0001 greeting
        sock.sendall(command.encode() + b"\n")
        reply = _read_reply(lines, path)
    except TimeoutError:
        raise BirdError(f"BIRD did not answer `{command}` on {path} within "
                        f"{timeout:g} s") from None
    finally:
        sock.close()
    errors = [line.text for line in reply if line.code >= 8000]
    if errors:
        raise BirdError(f"BIRD refused `{command}`: {'; '.join(errors)}")
    return reply


def _read_reply(lines, path: str) -> list[ReplyLine]:
    reply, code = [], None
    for raw in lines:
        raw = raw.rstrip("\n")
        if raw.startswith(" ") and code is not None:
            reply.append(ReplyLine(code, raw[1:]))
            continue
        match = _LINE.match(raw)
        if match is None:
            raise BirdError(f"unexpected line from BIRD on {path}: {raw!r}")
        code = int(match.group(1))
        reply.append(ReplyLine(code, match.group(3)))
        if match.group(2) == " ":
            return reply
    raise BirdError(f"BIRD closed its control socket {path} in the middle of a reply")
