"""The call table against the handlers it names: every field a call's
schema checks is a parameter of its handler, and every parameter is filled,
so a renamed parameter or field fails here, not on Docker's first call."""

import inspect

import pytest

from driver.network_driver import NetworkDriver
from ipam.driver import IpamDriver
from plugin import schemas
from plugin.calls import CALLS, Call


def mismatch(route: Call) -> str | None:
    """What is wrong between a route's schema and its handler, or None."""
    if getattr(route.service, route.handler.__name__, None) is not route.handler:
        return f"{route.handler.__qualname__} is not a method of {route.service.__name__}"
    params = list(inspect.signature(route.handler).parameters)[1:]  # after self
    given = list(route.schema.params.values())
    if sorted(given) != sorted(params):
        return f"{route.handler.__qualname__}{params} is given {given}"
    return None


@pytest.mark.parametrize("call", sorted(CALLS))
def test_schema_fields_are_the_handler_parameters(call):
    assert mismatch(CALLS[call]) is None


def test_a_mismatch_is_caught():
    assert "is given ['network_id']" in mismatch(
        Call(schemas.NETWORK, NetworkDriver, NetworkDriver.join))
    renamed = schemas.Request(NetworkID=("network", schemas.docker_id, ...))
    assert "is given ['network']" in mismatch(
        Call(renamed, NetworkDriver, NetworkDriver.delete_network))
    assert "IpamDriver.get_capabilities is not a method of NetworkDriver" in mismatch(
        Call(schemas.NO_ARGS, NetworkDriver, IpamDriver.get_capabilities))
