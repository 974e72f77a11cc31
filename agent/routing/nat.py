"""NAT outgoing: traffic from a pool with natOutgoing to anywhere outside
every Calico pool leaves masqueraded as the host's address (Felix's
cali-nat-outgoing, without its ipsets).  Our own chain in the nat table,
rewritten atomically with iptables-restore when the pools change and
jumped to from POSTROUTING.  The iptables commands run with -w, as dockerd
runs them, so both use the same backend (nft or legacy).  IPv6 pools get the
same chain from ip6tables.
"""

import logging
import shutil
import subprocess

from ipam.pools import Pool
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

CHAIN = "CALICO-LIBNETWORK-NAT"
JUMP = ["POSTROUTING", "-j", CHAIN]


def nat_rules(pools, version: int = 4) -> list[str]:
    """The chain's rules for pools of one IP version, in `iptables -S` form:
    pool-to-pool traffic is left alone first, then each natOutgoing pool is
    masqueraded."""
    same = sorted((p for p in pools if p.version == version), key=lambda p: p.cidr)
    if not any(p.nat_outgoing for p in same):
        return []
    rules = [f"-A {CHAIN} -d {p.cidr} -j RETURN" for p in same]
    rules += [f"-A {CHAIN} -s {p.cidr} -j MASQUERADE" for p in same if p.nat_outgoing]
    return rules


class Nat:
    def __init__(self, version: int = 4):
        self.version = version
        self.iptables = "iptables" if version == 4 else "ip6tables"
        self._programmed = None  # the rules last written (None: not read yet)
        self._warned = False

    def sync(self, pools: list[Pool], full: bool = False) -> None:
        """Make the chain hold nat_rules(pools); full: re-read iptables first."""
        if shutil.which(self.iptables) is None:
            if not self._warned:
                LOG.warning("%s not found: NAT outgoing is not programmed for IPv%d",
                            self.iptables, self.version)
                self._warned = True
            return
        wanted = nat_rules(pools, self.version)
        if full or self._programmed is None:
            self._programmed = self._read()
        changed = self._programmed != wanted
        if changed:
            table = "\n".join(["*nat", f":{CHAIN} - [0:0]", *wanted, "COMMIT", ""])
            _run([f"{self.iptables}-restore", "-w", "5", "--noflush"], table)
            LOG.info("NAT outgoing (IPv%d): %s", self.version,
                     "; ".join(wanted) or "no pool has natOutgoing")
            self._programmed = wanted
        if changed or full:
            if subprocess.run([self.iptables, "-w", "5", "-t", "nat", "-C", *JUMP],
                              capture_output=True).returncode:
                _run([self.iptables, "-w", "5", "-t", "nat", "-A", *JUMP])

    def _read(self) -> list[str] | None:
        result = subprocess.run([self.iptables, "-w", "5", "-t", "nat", "-S", CHAIN],
                                capture_output=True, text=True)
        if result.returncode:
            return None  # no chain yet
        return [line for line in result.stdout.splitlines() if line.startswith("-A ")]


def _run(argv, stdin=None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if result.returncode:
        raise KernelError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
