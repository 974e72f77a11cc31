"""Anti-spoofing, as Felix does it: a strict reverse-path check on every
workload (cali) interface.  A packet that enters from a cali interface must
carry a source address that this host routes back out of that same
interface (the endpoint's own /32 and /128, its link-local addresses),
else it is dropped before conntrack, NAT and policy see it.  Without it a
container with NET_RAW (one of Docker's default capabilities) sends with
another container's source address, and policy that admits by source
(profiles, selectors, nets) lets it in, on its host and across hosts.

Felix's rule (felix/rules/static.go, raw PREROUTING, nftables mode):
`fib saddr . mark . iif oif 0 drop` for packets from a workload interface,
in both families.  Ours is that rule in a table of its own, `inet
calico-libnetwork-raw`, apart from the policy table and without nftables'
`owner` flag: it outlives the process that writes it, so it holds while
the node agent is down or restarting, with CALICO_LIBNETWORK_POLICY=false
and with --no-agent (anti-spoofing is not policy: Felix applies it whatever
the policies).  `run` writes it at start, before it serves Join, and the
agent whenever it finds it gone (`nft flush ruleset`).

The one exception: IPv6 neighbour discovery and MLD from the unspecified
address `::` (duplicate address detection, before the container has an
address), which have no route back and never leave the link; the kernel's
rpfilter match lets `::` through for the same reason.  Link-local sources
pass the check itself: the host routes fe80::/64 out of each cali interface.
"""

import logging

from agent import nftables
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

TABLE = "calico-libnetwork-raw"
FAMILY = "inet"
CHECK_INTERVAL = 5.0
IFACE_PREFIX = "cali"  # the host ends are always cali<endpoint id>
_ND_FROM_UNSPECIFIED = ("nd-neighbor-solicit", "nd-router-solicit", "mld-listener-report",
                        "mld2-listener-report")

# Priority raw: before conntrack (a dropped packet leaves no entry) and before
# any filter chain, Felix's included.
SCRIPT = f"""\
add table {FAMILY} {TABLE}
delete table {FAMILY} {TABLE}
table {FAMILY} {TABLE} {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        iifname != "{IFACE_PREFIX}*" return
        ip6 saddr :: icmpv6 type {{ {", ".join(_ND_FROM_UNSPECIFIED)} }} accept
        fib saddr . mark . iif oif missing counter drop comment "forged source address"
    }}
}}
"""


def ensure() -> None:
    """Write the table, replacing what is there in one transaction (so safe
    to replay); KernelError when nftables refuses it."""
    nftables.run(SCRIPT)


def repair() -> None:
    """Write the table when it is missing (at the agent's start, then
    every CHECK_INTERVAL s); logs, never raises: routes go on regardless."""
    try:
        nftables.run(f"list chain {FAMILY} {TABLE} prerouting\n")
        return
    except KernelError:
        pass
    try:
        ensure()
        LOG.warning("table %s %s was missing: written", FAMILY, TABLE)
    except KernelError as exc:
        LOG.error("containers' source addresses are not checked: %s", exc)
