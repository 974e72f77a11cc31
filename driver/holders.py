"""Which endpoint of this node holds each address, for ReleaseAddress.

dockerd deletes an endpoint before it releases the endpoint's addresses.
When the plugin dies while dockerd waits for DeleteEndpoint, dockerd
retries the call with an empty body (its plugin client resends a body it
already read), the retry is refused, and dockerd goes on to release the
address and remove the container: the WorkloadEndpoint would stay, listing
an address IPAM hands out again.  So ReleaseAddress first deletes an
endpoint of this node that still holds the address.  The index is read
from etcd once (this node's endpoints only) and kept by CreateEndpoint and
DeleteEndpoint.
"""

import threading

import netaddr

from datastore.resources import Resources
from driver import endpoints as ep


class AddressHolders:
    def __init__(self, resources: Resources, node: str):
        self.resources = resources
        self.node = node
        self._holders: dict[str, str] | None = None  # address -> endpoint id; None: not read
        self._lock = threading.Lock()

    def add(self, endpoint_id: str, ip_networks) -> None:
        with self._lock:
            if self._holders is not None:
                for address in _addresses(ip_networks):
                    self._holders[address] = endpoint_id

    def remove(self, endpoint_id: str, ip_networks) -> None:
        with self._lock:
            if self._holders is not None:
                for address in _addresses(ip_networks):
                    if self._holders.get(address) == endpoint_id:
                        del self._holders[address]

    def holder(self, address) -> str | None:
        """The endpoint of this node whose WorkloadEndpoint lists address."""
        with self._lock:
            if self._holders is None:
                holders = {}
                for wep in ep.node_weps(self.resources, self.node):
                    for found in _addresses(wep.spec.get("ipNetworks") or ()):
                        holders[found] = wep.spec.get("endpoint", "")
                self._holders = holders
            return self._holders.get(str(netaddr.IPAddress(str(address))))


def _addresses(ip_networks) -> list[str]:
    return [str(netaddr.IPNetwork(n).ip) for n in ip_networks]
