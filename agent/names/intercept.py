"""Sending the containers' questions for the host's nameservers to the
responder: one DNAT rule per upstream, to the responder's port for it, in a
table of its own, `inet calico-libnetwork-dns` (apart from the policy
table, so that names work with CALICO_LIBNETWORK_POLICY=false).  IPv4
nameservers go to 169.254.1.1, IPv6 ones to fe80::1 (every container's
gateway, on each host-side veth); the responder's IPv6 sockets listen on
`::`, so the table also drops what reaches their ports from anywhere but a
cali veth.

The table carries nftables' `owner` flag and is written through
libnftables by the names watchdog (agent/names/watchdog.py), a child of the
agent: the kernel deletes it when that process ends, which it does when the
agent ends, a crash or `kill -9` included.  While the responder does not
answer (a stuck agent) the watchdog writes the table `bypassed`: nothing
goes to the responder, and questions asked of 169.254.1.1 itself go to a
nameserver instead (`fallback`), so they are answered as if we were not there.

Programming can fail for a moment (the table of a previous owner whose
socket a child process still holds: EPERM), and the table can go while we
run (`nft flush ruleset`, a reload of the nftables service): Interception
keeps it, programming it until that works and again whenever it is gone.
"""

import ipaddress
import logging
import threading

from agent.names.upstreams import GATEWAY, GATEWAY6
from agent.nftables import NftContext
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

TABLE = "calico-libnetwork-dns"
FAMILY = "inet"


def script(redirects: dict[str, int], bypassed: bool = False,
           fallback: str | None = None) -> str:
    """The whole table.  redirects: upstream address -> the responder's
    port for it; bypassed: none of them (the responder does not answer), and
    questions to 169.254.1.1 go to `fallback` (an IPv4 nameserver), if any."""
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t} {{ flags owner; }}", f"flush table {t}",
             f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; }}"]
    ports6 = sorted(port for upstream, port in redirects.items() if _version(upstream) == 6)
    if ports6:
        lines.append(f"add chain {t} input {{ type filter hook input priority filter; }}")
        lines.append(f'add rule {t} input iifname != "cali*" meta nfproto ipv6 '
                     f"meta l4proto {{ tcp, udp }} th dport {{ {', '.join(map(str, ports6))} }} "
                     "drop")
    for proto in ("udp", "tcp"):
        if bypassed and fallback:
            lines.append(f'add rule {t} prerouting iifname "cali*" ip daddr {GATEWAY} '
                         f"{proto} dport 53 dnat ip to {fallback}:53")
        for upstream, port in ([] if bypassed else sorted(redirects.items())):
            if _version(upstream) == 4:
                lines.append(f'add rule {t} prerouting iifname "cali*" ip daddr {upstream} '
                             f"{proto} dport 53 dnat ip to {GATEWAY}:{port}")
            else:
                lines.append(f'add rule {t} prerouting iifname "cali*" ip6 daddr {upstream} '
                             f"{proto} dport 53 dnat ip6 to [{GATEWAY6}]:{port}")
    return "\n".join(lines) + "\n"


def _version(address: str) -> int:
    return ipaddress.ip_address(address).version


class Interception:
    """The table, kept from a thread of its own (keep): programmed at once,
    then checked every `check_interval` s and written again if gone; after
    a failure, tried again every `retry_interval` s."""

    def __init__(self, check_interval: float = 5.0, retry_interval: float = 1.0):
        self.check_interval, self.retry_interval = check_interval, retry_interval
        self.nft = None
        self.redirects = {}
        self.bypassed = False
        self.fallback = None
        self.programmed = False  # the table is there as we wrote it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = None

    def program(self, redirects: dict[str, int] | None = None, bypassed: bool | None = None,
                fallback: str | None = None) -> None:
        """Write the table now, with what is given changed (KernelError if
        that fails; keep() then tries again)."""
        with self._lock:
            if redirects is not None:
                self.redirects, self.fallback = dict(redirects), fallback
            if bypassed is not None:
                self.bypassed = bypassed
            try:
                self._program()
            finally:
                self._wake.set()  # the keeper sees at once what came of it

    def keep(self, on_change=None) -> "Interception":
        """Keep the table as last programmed; on_change(programmed) is
        called from the thread each time that changes."""
        self._thread = threading.Thread(target=self._keep, args=(on_change,),
                                        name="dns-interception", daemon=True)
        self._thread.start()
        return self

    def remove(self) -> None:
        self._stop.set()
        self._wake.set()
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
        failures, reported = 0, self.programmed
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
                            "again every %.0f s)", ", ".join(self.redirects) or "no nameserver",
                            exc, self.retry_interval)
                        failures += 1
                    else:
                        if failures:
                            LOG.info("containers' questions to %s are intercepted now",
                                     ", ".join(self.redirects) or "no nameserver")
                        elif was:
                            LOG.warning("table %s %s was gone (nft flush ruleset?): "
                                        "written again", FAMILY, TABLE)
                        failures = 0
                now = self.programmed
            if on_change is not None and now != reported:
                on_change(now)
                reported = now
            self._wake.wait(self.check_interval if now else self.retry_interval)
            self._wake.clear()

    def _program(self) -> None:
        if self.nft is None:
            self.nft = NftContext()
        try:
            self.nft.run(script(self.redirects, self.bypassed, self.fallback))
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
