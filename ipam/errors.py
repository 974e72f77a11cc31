"""Typed IPAM errors.  str(error) is shown to the Docker user as is, so every
message says what went wrong and what to do next."""

POOL_CREATE_HINT = "calico-libnetwork pool create"
EXAMPLE_CIDR = {4: "192.168.0.0/16", 6: "fd00:c0:11c0::/64"}


class IpamError(Exception):
    """Base of every error raised by ipam/."""


class InvalidRequest(IpamError):
    """The caller asked for something Calico IPAM does not do."""


class InvalidPool(IpamError):
    """An IP pool definition fails validation or clashes with another pool."""


class NoPoolsConfigured(IpamError):
    def __init__(self, version: int, detail: str = ""):
        super().__init__(
            f"no Calico IP{'v6' if version == 6 else ''} pools are configured"
            f"{detail}; create one, e.g. "
            f"`{POOL_CREATE_HINT} {EXAMPLE_CIDR[version]}`")


class PoolNotFound(IpamError):
    pass


class PoolInUse(IpamError):
    """A pool still has allocated addresses."""


class AddressInUse(IpamError):
    pass


class AddressNotInPool(IpamError):
    pass


class PoolsExhausted(IpamError):
    pass
