"""Whether IPIP routes can be programmed: the kernel must have the ipip
module (which makes tunl0).  Asking it to create tunl0 loads the module
where it exists; EOPNOTSUPP means it does not."""

import errno
import os

from pyroute2.netlink.exceptions import NetlinkError

from agent.routing.routes import IPIP_DEVICE
from kernel import netlink


def ensure_tunl0() -> bool:
    """tunl0 exists and is up; False if the kernel has no IPIP."""
    with netlink.iproute(f"set up {IPIP_DEVICE}") as ipr:
        if not os.path.exists("/sys/module/ipip") and not ipr.link_lookup(ifname=IPIP_DEVICE):
            try:
                ipr.link("add", ifname=IPIP_DEVICE, kind="ipip")
            except NetlinkError as exc:
                if exc.code in (errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL):
                    return False
                if exc.code != errno.EEXIST:
                    raise
        found = ipr.link_lookup(ifname=IPIP_DEVICE)
        if not found:
            return False
        ipr.link("set", index=found[0], state="up")
        return True
