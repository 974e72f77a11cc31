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
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
            if _netns(entry) == here:
                yield int(entry), argv
        except OSError:
            continue


def _netns(pid: str) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino
