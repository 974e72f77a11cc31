"""NAT outgoing: traffic from a pool with natOutgoing to anywhere outside
every Calico pool leaves masqueraded as the host's address (Felix's
cali-nat-outgoing, without its ipsets).  Our own chain in the nat table,
rewritten atomically with iptables-restore when the pools change and
jumped to from POSTROUTING.  The iptables commands run with -w, as dockerd
runs them, so both use the same backend (nft or legacy).  IPv4 only.
"""

import logging
import shutil
import subprocess

from agent.errors import KernelError
from ipam.pools import Pool

LOG = logging.getLogger(__name__)

CHAIN = "CALICO-LIBNETWORK-NAT"
JUMP = ["POSTROUTING", "-j", CHAIN]


def nat_rules(pools) -> list[str]:
    """The chain's rules, in `iptables -S` form: pool-to-pool traffic is
    left alone first, then each natOutgoing pool is masqueraded."""
    v4 = sorted((p for p in pools if p.version == 4), key=lambda p: p.cidr)
    if not any(p.nat_outgoing for p in v4):
        return []
    rules = [f"-A {CHAIN} -d {p.cidr} -j RETURN" for p in v4]
    rules += [f"-A {CHAIN} -s {p.cidr} -j MASQUERADE" for p in v4 if p.nat_outgoing]
    return rules


class Nat:
    def __init__(self):
        self._programmed = None  # the rules last written (None: not read yet)
        self._warned = False

    def sync(self, pools: list[Pool], full: bool = False) -> None:
        """Make the chain hold nat_rules(pools); full: re-read iptables first."""
        if shutil.which("iptables") is None:
            if not self._warned:
                LOG.warning("iptables not found: NAT outgoing is not programmed")
                self._warned = True
            return
        wanted = nat_rules(pools)
        if full or self._programmed is None:
            self._programmed = self._read()
        changed = self._programmed != wanted
        if changed:
            table = "\n".join(["*nat", f":{CHAIN} - [0:0]", *wanted, "COMMIT", ""])
            _run(["iptables-restore", "-w", "5", "--noflush"], table)
            LOG.info("NAT outgoing: %s", "; ".join(wanted) or "no pool has natOutgoing")
            self._programmed = wanted
        if changed or full:
            if subprocess.run(["iptables", "-w", "5", "-t", "nat", "-C", *JUMP],
                              capture_output=True).returncode:
                _run(["iptables", "-w", "5", "-t", "nat", "-A", *JUMP])

    @staticmethod
    def _read() -> list[str] | None:
        result = subprocess.run(["iptables", "-w", "5", "-t", "nat", "-S", CHAIN],
                                capture_output=True, text=True)
        if result.returncode:
            return None  # no chain yet
        return [line for line in result.stdout.splitlines() if line.startswith("-A ")]


def _run(argv, stdin=None) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True)
    if result.returncode:
        raise KernelError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
