"""Every call Docker makes to the plugin: the schema of its body and the
domain method that answers it (Plugin.Activate is answered by the app)."""

from collections.abc import Callable
from typing import NamedTuple

from driver.network_driver import NetworkDriver
from ipam.driver import IpamDriver
from plugin import schemas


class Call(NamedTuple):
    schema: schemas.Request
    service: type  # the domain class whose object answers the call
    handler: Callable  # a method of `service`, taking the schema's params

    def call(self, service, fields: dict):
        """The handler on the `service` object, given the checked body's fields."""
        params = self.schema.params
        return self.handler(service, **{params[name]: value for name, value in fields.items()})


def _answered_by(service: type, calls: dict) -> dict[str, Call]:
    return {call: Call(schema, service, handler) for call, (schema, handler) in calls.items()}


CALLS = {
    **_answered_by(NetworkDriver, {
        "NetworkDriver.GetCapabilities": (schemas.NO_ARGS, NetworkDriver.get_capabilities),
        "NetworkDriver.GwAllocCheck": (schemas.GW_ALLOC_CHECK, NetworkDriver.gw_alloc_check),
        "NetworkDriver.CreateNetwork": (schemas.CREATE_NETWORK, NetworkDriver.create_network),
        "NetworkDriver.DeleteNetwork": (schemas.NETWORK, NetworkDriver.delete_network),
        "NetworkDriver.AllocateNetwork":
            (schemas.ALLOCATE_NETWORK, NetworkDriver.allocate_network),
        "NetworkDriver.FreeNetwork": (schemas.NETWORK, NetworkDriver.free_network),
        "NetworkDriver.CreateEndpoint": (schemas.CREATE_ENDPOINT, NetworkDriver.create_endpoint),
        "NetworkDriver.EndpointOperInfo": (schemas.ENDPOINT, NetworkDriver.endpoint_oper_info),
        "NetworkDriver.DeleteEndpoint": (schemas.ENDPOINT, NetworkDriver.delete_endpoint),
        "NetworkDriver.Join": (schemas.JOIN, NetworkDriver.join),
        "NetworkDriver.Leave": (schemas.ENDPOINT, NetworkDriver.leave),
        "NetworkDriver.DiscoverNew": (schemas.DISCOVERY, NetworkDriver.discover_new),
        "NetworkDriver.DiscoverDelete": (schemas.DISCOVERY, NetworkDriver.discover_delete),
        "NetworkDriver.ProgramExternalConnectivity":
            (schemas.ENDPOINT_WITH_OPTIONS, NetworkDriver.program_external_connectivity),
        "NetworkDriver.RevokeExternalConnectivity":
            (schemas.ENDPOINT, NetworkDriver.revoke_external_connectivity),
    }),
    **_answered_by(IpamDriver, {
        "IpamDriver.GetCapabilities": (schemas.NO_ARGS, IpamDriver.get_capabilities),
        "IpamDriver.GetDefaultAddressSpaces":
            (schemas.NO_ARGS, IpamDriver.get_default_address_spaces),
        "IpamDriver.RequestPool": (schemas.REQUEST_POOL, IpamDriver.request_pool),
        "IpamDriver.ReleasePool": (schemas.RELEASE_POOL, IpamDriver.release_pool),
        "IpamDriver.RequestAddress": (schemas.REQUEST_ADDRESS, IpamDriver.request_address),
        "IpamDriver.ReleaseAddress": (schemas.RELEASE_ADDRESS, IpamDriver.release_address),
    }),
}
