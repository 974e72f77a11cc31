"""Let the host forward workload traffic when nothing else does.

dockerd sets the FORWARD policy to DROP, and without Felix nothing accepts
traffic to and from cali interfaces, so containers could reach neither each
other nor anything else.  We append (never insert) a jump to a chain of our
own: Felix, when it runs, inserts its cali-FORWARD at the top of FORWARD and
so still applies Calico policy first.

This goes through the iptables command (with -w for the xtables lock), as
dockerd itself does, so that both use the same backend (nft or legacy).
"""

import logging
import shutil
import subprocess

LOG = logging.getLogger(__name__)

CHAIN = "CALICO-LIBNETWORK-FWD"
RULES = (["-i", "cali+", "-j", "ACCEPT"], ["-o", "cali+", "-j", "ACCEPT"])


class ForwardingError(Exception):
    pass


def ensure_forwarding() -> None:
    """Make sure FORWARD ends with a jump to our chain accepting cali traffic
    (IPv4 and IPv6).  Safe to call again; only missing pieces are added."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            LOG.warning("%s not found: forwarding for containers is left to the host", tool)
            continue
        if not _ok(tool, "-n", "-L", CHAIN):
            _run(tool, "-N", CHAIN)
        for rule in RULES:
            if not _ok(tool, "-C", CHAIN, *rule):
                _run(tool, "-A", CHAIN, *rule)
        if not _ok(tool, "-C", "FORWARD", "-j", CHAIN):
            _run(tool, "-A", "FORWARD", "-j", CHAIN)


def _ok(tool, *args) -> bool:
    return subprocess.run([tool, "-w", "5", *args], capture_output=True).returncode == 0


def _run(tool, *args) -> None:
    result = subprocess.run([tool, "-w", "5", *args], capture_output=True, text=True)
    if result.returncode:
        raise ForwardingError(f"{tool} {' '.join(args)} failed: {result.stderr.strip()}")
