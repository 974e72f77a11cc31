"""Typed agent errors; str(error) is meant for the user and says what to do."""


class AgentError(Exception):
    """Base of every error raised by agent/."""


class AutodetectError(AgentError):
    """No IPv4 address could be found for this node."""


class NodeConflict(AgentError):
    """Another live node already uses this node's name or address."""


class KernelError(AgentError):
    """A netlink or iptables step failed."""
