"""Typed agent errors; str(error) is meant for the user and says what to do."""


class AgentError(Exception):
    """Base of the agent's own errors (a failed step on the kernel is a
    kernel.errors.KernelError)."""


class AutodetectError(AgentError):
    """No IPv4 address could be found for this node."""


class NodeConflict(AgentError):
    """Another live node already uses this node's name or address."""
