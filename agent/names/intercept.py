"""Sending the containers' questions for the host's nameservers to the
responder: one DNAT rule per upstream, to the responder's port for it, in a
table of its own, `ip calico-libnetwork-dns` (apart from the policy table,
so that names work with CALICO_LIBNETWORK_POLICY=false).

The table carries nftables' `owner` flag and is written through
libnftables in this process: the kernel deletes it when the process that
holds the netlink socket ends, a crash or `kill -9` included.  So the
questions are redirected exactly while the responder lives; otherwise they
reach their nameserver as if we were not there.

Programming can fail for a moment (the table of a previous agent whose
socket a child process still holds: EPERM), and the table can go while we
run (`nft flush ruleset`, a reload of the nftables service): Interception
keeps it, programming it until that works and again whenever it is gone.
"""

import logging
import threading

from agent.names.upstreams import GATEWAY
from agent.nftables import NftContext
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

TABLE = "calico-libnetwork-dns"
FAMILY = "ip"


def script(redirects: dict[str, int]) -> str:
    """The whole table: upstream address -> the responder's port for it."""
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t} {{ flags owner; }}", f"flush table {t}",
             f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; }}"]
    for upstream, port in sorted(redirects.items()):
        for proto in ("udp", "tcp"):
            lines.append(f'add rule {t} prerouting iifname "cali*" ip daddr {upstream} '
                         f"{proto} dport 53 dnat to {GATEWAY}:{port}")
    return "\n".join(lines) + "\n"


class Interception:
    """The table, kept from a thread of its own (keep): programmed at once,
    then checked every `check_interval` s and written again if gone; after
    a failure, tried again every `retry_interval` s."""

    def __init__(self, check_interval: float = 5.0, retry_interval: float = 1.0):
        self.check_interval, self.retry_interval = check_interval, retry_interval
        self.nft = None
        self.redirects = {}
        self.programmed = False  # the table is there as we wrote it
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = None

    def program(self, redirects: dict[str, int]) -> None:
        """Write the table now (KernelError if that fails)."""
        with self._lock:
            self.redirects = dict(redirects)
            self._program()

    def keep(self, redirects: dict[str, int], on_change=None) -> "Interception":
        """Program the table and keep it; on_change(programmed) is called
        from the thread each time that changes."""
        self.redirects = dict(redirects)
        self._thread = threading.Thread(target=self._keep, args=(on_change,),
                                        name="dns-interception", daemon=True)
        self._thread.start()
        return self

    def remove(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            if self.nft is not None:
                try:
                    self.nft.run(f"delete table {FAMILY} {TABLE}\n")
                except KernelError:
                    pass
                self.nft.close()
                self.nft = None
            self.programmed = False

    def _keep(self, on_change) -> None:
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                was = self.programmed
                if not (was and self._present()):
                    try:
                        self._program()
                    except KernelError as exc:
                        (LOG.error if failures == 0 else LOG.debug)(
                            "containers' questions to %s are not intercepted: %s (trying "
                            "again every %.0f s)", ", ".join(self.redirects), exc,
                            self.retry_interval)
                        failures += 1
                    else:
                        if failures:
                            LOG.info("containers' questions to %s are intercepted now",
                                     ", ".join(self.redirects))
                        elif was:
                            LOG.warning("table %s %s was gone (nft flush ruleset?): "
                                        "written again", FAMILY, TABLE)
                        failures = 0
                now = self.programmed
            if on_change is not None and now != was:
                on_change(now)
            self._stop.wait(self.check_interval if now else self.retry_interval)

    def _program(self) -> None:
        if self.nft is None:
            self.nft = NftContext()
        try:
            self.nft.run(script(self.redirects))
        except KernelError:
            self.programmed = False
            raise
        self.programmed = True

    def _present(self) -> bool:
        if self.nft is None:
            return False
        try:
            self.nft.run(f"list table {FAMILY} {TABLE}\n")
            return True
        except KernelError:
            return False
