"""The other processes of this network namespace, from /proc: `node status`
looks there for a node agent, the BGP daemon for a BIRD that is not ours."""

import os
from collections.abc import Iterator


def in_this_netns() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of each other process in this process's network
    namespace that can be read (one gone meanwhile, or not ours to look at,
    is left out)."""
    here = _netns("self")
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            same = _netns(entry) == here
        except OSError:
            continue
        if same and (command := argv(int(entry))):
            yield int(entry), command


def argv(pid: int) -> list[str]:
    """The process's command line, [] when it is gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _netns(pid: str) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino
