"""Typed NetworkDriver errors; each message is meant for the user."""


class DriverError(Exception):
    """A NetworkDriver request that cannot be honoured."""


class UnsupportedOption(DriverError):
    pass


class NotCalicoIpam(DriverError):
    pass


class UnknownEndpoint(DriverError):
    pass


class DockerUnavailable(DriverError):
    """dockerd did not answer one of the plugin's questions (the message says why)."""


class NetworkNameUnknown(DriverError):
    """An endpoint's network has no known name, and Calico names its profile after it."""
