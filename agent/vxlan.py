"""This node's VXLAN tunnel endpoint (VTEP), set up as Felix does it: the
vxlan.calico device (VNI 4096, UDP 4789, no learning), its address taken
from a VXLAN pool by IPAM on this node (handle vxlan-tunnel-addr-<node>) and
recorded, with the device's MAC, on the Node (ipv4VXLANTunnelAddr,
vxlanTunnelMACAddr) for the other nodes to route to."""

import errno
import logging
from typing import NamedTuple

from netaddr import IPAddress
from pyroute2.netlink.exceptions import NetlinkError

from agent.errors import AgentError
from agent.kernel import netlink
from agent.routes import VXLAN_DEVICE
from datastore.errors import ResourceNotFound, TooManyConflicts
from datastore.resources import Resource, Resources
from ipam.allocator import Ipam
from ipam.errors import IpamError
from ipam.pools import Pool

LOG = logging.getLogger(__name__)

VNI = 4096
PORT = 4789
OVERHEAD = 50  # outer IPv4 + UDP + VXLAN + inner Ethernet headers
ADDRESS_TYPE = "vxlanTunnelAddress"


class Vtep(NamedTuple):
    ip: IPAddress
    mac: str


def handle_id(node: str) -> str:
    return f"vxlan-tunnel-addr-{node}"


def ensure_vtep(ipam: Ipam, resources: Resources, pools: list[Pool],
                local_ip: IPAddress, underlay_mtu: int | None) -> Vtep:
    """Allocate (or keep) the tunnel address, make the device, record both."""
    node = resources.get("Node", ipam.node)
    if node is None:
        raise AgentError(f"Node {ipam.node} vanished; the agent registers it at start")
    recorded_ip = node.spec.get("ipv4VXLANTunnelAddr")
    ip = _tunnel_address(ipam, pools, recorded_ip)
    mac = ensure_device(ip, node.spec.get("vxlanTunnelMACAddr"), local_ip,
                        (underlay_mtu or 1500) - OVERHEAD)
    _record(resources, ipam.node, {"ipv4VXLANTunnelAddr": str(ip), "vxlanTunnelMACAddr": mac})
    return Vtep(ip, mac)


def remove_vtep(ipam: Ipam, resources: Resources) -> None:
    """No VXLAN pool left: drop the device, the address and the Node fields."""
    with netlink(f"remove {VXLAN_DEVICE}") as ipr:
        try:
            ipr.link("del", ifname=VXLAN_DEVICE)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
    ipam.release_by_handle(handle_id(ipam.node))
    _record(resources, ipam.node, {"ipv4VXLANTunnelAddr": None, "vxlanTunnelMACAddr": None})


def _tunnel_address(ipam: Ipam, pools: list[Pool], recorded: str | None) -> IPAddress:
    handle = handle_id(ipam.node)
    if recorded:
        ip = IPAddress(recorded)
        allocation = ipam.allocation(ip)
        if (allocation and allocation[0] == handle
                and any(ip in p.cidr for p in pools)):
            return ip
    # Whatever the handle still holds is stale (another pool, a lost write).
    ipam.release_by_handle(handle)
    enabled = [p.name for p in pools if not p.disabled]
    if not enabled:
        raise AgentError("every VXLAN pool is disabled: no tunnel address can be allocated")
    try:
        ip = ipam.auto_assign(4, handle, {"node": ipam.node, "type": ADDRESS_TYPE},
                              pools=enabled)
    except (IpamError, TooManyConflicts) as exc:
        raise AgentError(f"cannot allocate this node's VXLAN tunnel address: {exc}") from exc
    LOG.info("allocated VXLAN tunnel address %s for node %s", ip, ipam.node)
    return ip


def ensure_device(ip: IPAddress, mac: str | None, local_ip: IPAddress, mtu: int) -> str:
    """vxlan.calico up with address ip/32 (and MAC mac, when given, so other
    nodes' ARP and FDB entries stay right across restarts); its MAC."""
    with netlink(f"set up {VXLAN_DEVICE}") as ipr:
        found = ipr.link_lookup(ifname=VXLAN_DEVICE)
        if found and not _configured_as_wanted(ipr.link("get", index=found[0])[0], local_ip):
            LOG.info("recreating %s: its VNI, port or local address changed", VXLAN_DEVICE)
            ipr.link("del", index=found[0])
            found = []
        if not found:
            ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=VNI,
                     vxlan_port=PORT, vxlan_learning=0, vxlan_local=str(local_ip))
            found = ipr.link_lookup(ifname=VXLAN_DEVICE)
        index = found[0]
        attrs = {"mtu": mtu, "state": "up"}
        if mac:
            attrs["address"] = mac.lower()
        ipr.link("set", index=index, **attrs)
        for addr in ipr.get_addr(index=index, family=2):
            if addr.get("IFA_ADDRESS") != str(ip) or addr["prefixlen"] != 32:
                ipr.addr("del", index=index, address=addr.get("IFA_ADDRESS"),
                         prefixlen=addr["prefixlen"])
        try:
            ipr.addr("add", index=index, address=str(ip), prefixlen=32)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        return ipr.link("get", index=index)[0].get("IFLA_ADDRESS").lower()


def _configured_as_wanted(link, local_ip: IPAddress) -> bool:
    if link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) != "vxlan":
        return False
    data = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    return (data.get("IFLA_VXLAN_ID") == VNI and data.get("IFLA_VXLAN_PORT") == PORT
            and data.get("IFLA_VXLAN_LOCAL") == str(local_ip)
            and not data.get("IFLA_VXLAN_LEARNING"))


def _record(resources: Resources, name: str, fields: dict) -> None:
    """Set (None: remove) VXLAN fields on the Node, keeping everything else."""
    def set_fields(node: Resource) -> Resource | None:
        spec = {k: v for k, v in {**node.spec, **fields}.items() if v is not None}
        if spec == node.spec:
            return None
        node.spec = spec
        return node

    try:
        resources.modify("Node", name, set_fields)
    except ResourceNotFound:
        raise AgentError(f"Node {name} vanished; the agent registers it at start") from None
    except TooManyConflicts:
        raise AgentError(f"Node {name} kept changing while recording its VXLAN tunnel") from None
