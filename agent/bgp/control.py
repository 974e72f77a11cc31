"""BIRD's control socket, as birdc speaks it: one command, its reply lines.

Replies are framed by four-digit codes: "NNNN-text" for the first line of
a code, " text" for further lines, "NNNN text" for the last line of the
reply (BIRD 2 nest/cli.c).  Codes 8000-9999 are errors (doc/reply_codes).
"""

import socket

TIMEOUT = 10.0  # seconds: `configure` of a large config parses it first


class ControlError(Exception):
    """The socket cannot be reached, or BIRD answered with an error code."""


def command(path: str, text: str, timeout: float = TIMEOUT) -> list[tuple[str, str]]:
    """Send one command; [(code, line), ...] of the reply (continuation
    lines carry the code of the line they continue)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            reader = sock.makefile("r", encoding="utf-8", errors="replace")
            _read_reply(reader)  # the "0001 BIRD x.y.z ready." banner
            sock.sendall(text.encode() + b"\n")
            return _read_reply(reader)
    except OSError as exc:
        raise ControlError(f"BIRD's control socket {path}: {exc}") from None


def _read_reply(reader) -> list[tuple[str, str]]:
    lines, code = [], ""
    for raw in reader:
        line = raw.rstrip("\n")
        if line.startswith(" "):
            lines.append((code, line[1:]))
            continue
        code, sep, rest = line[:4], line[4:5], line[5:]
        lines.append((code, rest))
        if sep == " ":
            return lines
    raise ControlError("BIRD closed its control socket in the middle of a reply")


def configure(path: str, config: str) -> str:
    """Have BIRD re-read `config`; sessions whose configuration did not
    change stay up.  Returns BIRD's last line; ControlError on a config
    error (BIRD keeps running the old one)."""
    reply = command(path, f'configure "{config}"')
    code, text = reply[-1]
    if code.startswith(("8", "9")):
        raise ControlError(f"BIRD refused {config}: {text}")
    return text
