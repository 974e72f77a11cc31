"""The one error for a step on the host's kernel."""


class KernelError(Exception):
    """A netlink, sysctl, nftables or iptables step failed, or was refused
    before it was sent (a bad interface name); the message says which and
    is meant for the user."""
