"""The host's kernel as the driver and the agent both talk to it: a bottom
layer beside datastore/.

netlink.py is the one way to use netlink (pyroute2): a socket per thread,
kept between calls, changes sent in batches with an ack each, queries on
the thread's IPRoute, the main routing table; errors.py: KernelError, the
one error for a step on the kernel that failed (netlink, sysctls, and the
agent's nftables and iptables).

May import: nothing of this project.
"""
