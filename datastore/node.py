"""The Node record as the agents read it: its addresses, AS and route
reflector cluster (spec.bgp), labels and VXLAN tunnel endpoints."""

from dataclasses import dataclass, field

from netaddr import AddrFormatError, IPAddress, IPNetwork

from datastore.bgp import as_number
from datastore.resources import Resource


@dataclass(frozen=True)
class Node:
    name: str
    address: IPNetwork | None  # bgp.ipv4Address: the IP with its subnet's prefix
    vtep_ip: IPAddress | None = None
    vtep_mac: str | None = None
    address6: IPNetwork | None = None  # bgp.ipv6Address
    vtep6_ip: IPAddress | None = None  # ipv6VXLANTunnelAddr
    vtep6_mac: str | None = None  # vxlanTunnelMACAddrV6
    as_number: int | None = None  # bgp.asNumber; None: the global AS
    rr_cluster_id: str | None = None  # bgp.routeReflectorClusterID: a route reflector
    labels: dict = field(default_factory=dict, hash=False)  # what BGPPeer selectors match

    @classmethod
    def from_resource(cls, res: Resource) -> "Node":
        spec = res.spec
        bgp = spec.get("bgp") or {}
        return cls(res.name, _network(bgp.get("ipv4Address"), 4),
                   _address(spec.get("ipv4VXLANTunnelAddr")),
                   (spec.get("vxlanTunnelMACAddr") or "").lower() or None,
                   _network(bgp.get("ipv6Address"), 6),
                   _address(spec.get("ipv6VXLANTunnelAddr")),
                   (spec.get("vxlanTunnelMACAddrV6") or "").lower() or None,
                   _as_number(bgp.get("asNumber")), _cluster_id(bgp.get("routeReflectorClusterID")),
                   dict(res.metadata.get("labels") or {}))

    def address_of(self, version: int) -> IPNetwork | None:
        return self.address if version == 4 else self.address6

    def vtep_of(self, version: int) -> tuple[IPAddress | None, str | None]:
        return (self.vtep_ip, self.vtep_mac) if version == 4 else (self.vtep6_ip, self.vtep6_mac)


def _network(text, version: int) -> IPNetwork | None:
    try:
        net = IPNetwork(text) if text else None
    except (AddrFormatError, ValueError):
        return None
    return net if net is not None and net.version == version else None


def _address(text) -> IPAddress | None:
    try:
        return IPAddress(text.split("/")[0]) if text else None
    except (AddrFormatError, ValueError):
        return None


def _as_number(value) -> int | None:
    try:
        return as_number(value) if value not in (None, "", 0) else None
    except ValueError:
        return None


def _cluster_id(text) -> str | None:
    """An IPv4-shaped cluster id, as Calico's validator requires."""
    try:
        return str(IPAddress(text, 4)) if text else None
    except (AddrFormatError, ValueError, TypeError):
        return None
