"""This node's VXLAN tunnel endpoints (VTEPs), set up as Felix does them:
the vxlan.calico device (VNI 4096, UDP 4789, no learning), its address taken
from a VXLAN pool by IPAM on this node (handle vxlan-tunnel-addr-<node>) and
recorded, with the device's MAC, on the Node (ipv4VXLANTunnelAddr,
vxlanTunnelMACAddr) for the other nodes to route to.  IPv6 pools get
vxlan-v6.calico the same way over the nodes' IPv6 addresses (handle
vxlan-v6-tunnel-addr-<node>, ipv6VXLANTunnelAddr, vxlanTunnelMACAddrV6)."""

import errno
import logging
from typing import NamedTuple

from netaddr import IPAddress
from pyroute2.netlink.exceptions import NetlinkError

from agent.errors import AgentError
from agent.routing.routes import VXLAN6_DEVICE, VXLAN_DEVICE
from datastore.errors import ResourceNotFound, TooManyConflicts
from datastore.resources import Resource, Resources
from ipam.allocator import Ipam
from ipam.errors import IpamError
from ipam.pools import Pool
from kernel import netlink

LOG = logging.getLogger(__name__)

VNI = 4096
PORT = 4789
ADDRESS_TYPE = "vxlanTunnelAddress"


class Family(NamedTuple):
    """What differs between the IPv4 and the IPv6 VTEP."""
    version: int
    device: str
    handle_prefix: str
    address_type: str
    ip_field: str  # on the Node's spec
    mac_field: str
    overhead: int  # outer IP + UDP + VXLAN + inner Ethernet headers


FAMILIES = {
    4: Family(4, VXLAN_DEVICE, "vxlan-tunnel-addr-", ADDRESS_TYPE, "ipv4VXLANTunnelAddr",
              "vxlanTunnelMACAddr", 50),
    6: Family(6, VXLAN6_DEVICE, "vxlan-v6-tunnel-addr-", "vxlanV6TunnelAddress",
              "ipv6VXLANTunnelAddr", "vxlanTunnelMACAddrV6", 70),
}
IFA_F_NODAD = 0x02


class Vtep(NamedTuple):
    ip: IPAddress
    mac: str


def handle_id(node: str, version: int = 4) -> str:
    return FAMILIES[version].handle_prefix + node


def ensure_vtep(ipam: Ipam, resources: Resources, pools: list[Pool],
                local_ip: IPAddress, underlay_mtu: int | None) -> Vtep:
    """Allocate (or keep) the tunnel address, make the device, record both
    (the family is local_ip's version; pools are of that version)."""
    family = FAMILIES[local_ip.version]
    node = resources.get("Node", ipam.node)
    if node is None:
        raise AgentError(f"Node {ipam.node} vanished; the agent registers it at start")
    recorded_ip = node.spec.get(family.ip_field)
    ip = _tunnel_address(ipam, pools, recorded_ip, family)
    mac = ensure_device(ip, node.spec.get(family.mac_field), local_ip,
                        (underlay_mtu or 1500) - family.overhead)
    _record(resources, ipam.node, {family.ip_field: str(ip), family.mac_field: mac})
    return Vtep(ip, mac)


def remove_vtep(ipam: Ipam, resources: Resources, version: int = 4) -> None:
    """No VXLAN pool left: drop the device, the address and the Node fields."""
    family = FAMILIES[version]
    with netlink.iproute(f"remove {family.device}") as ipr:
        try:
            ipr.link("del", ifname=family.device)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
    ipam.release_by_handle(handle_id(ipam.node, version))
    _record(resources, ipam.node, {family.ip_field: None, family.mac_field: None})


def _tunnel_address(ipam: Ipam, pools: list[Pool], recorded: str | None,
                    family: Family) -> IPAddress:
    handle = handle_id(ipam.node, family.version)
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
        raise AgentError(f"every IPv{family.version} VXLAN pool is disabled: no tunnel "
                         "address can be allocated")
    try:
        ip = ipam.auto_assign(family.version, handle,
                              {"node": ipam.node, "type": family.address_type}, pools=enabled)
    except (IpamError, TooManyConflicts) as exc:
        raise AgentError(f"cannot allocate this node's {family.device} tunnel address: "
                         f"{exc}") from exc
    LOG.info("allocated %s tunnel address %s for node %s", family.device, ip, ipam.node)
    return ip


def ensure_device(ip: IPAddress, mac: str | None, local_ip: IPAddress, mtu: int) -> str:
    """vxlan.calico (vxlan-v6.calico for an IPv6 local_ip) up with address
    ip/32 (/128) (and MAC mac, when given, so other nodes' ARP and FDB
    entries stay right across restarts); its MAC."""
    device, version = FAMILIES[local_ip.version].device, local_ip.version
    host_len = 32 if version == 4 else 128
    with netlink.iproute(f"set up {device}") as ipr:
        found = ipr.link_lookup(ifname=device)
        if found and not _configured_as_wanted(ipr.link("get", index=found[0])[0], local_ip):
            LOG.info("recreating %s: its VNI, port or local address changed", device)
            ipr.link("del", index=found[0])
            found = []
        if not found:
            local = {"vxlan_local": str(local_ip)} if version == 4 else \
                {"vxlan_local6": str(local_ip)}
            ipr.link("add", ifname=device, kind="vxlan", vxlan_id=VNI,
                     vxlan_port=PORT, vxlan_learning=0, **local)
            found = ipr.link_lookup(ifname=device)
        index = found[0]
        attrs = {"mtu": mtu, "state": "up"}
        # Only a different MAC: setting even the same one flushes the ARP entries.
        if mac and mac.lower() != ipr.link("get", index=index)[0].get("IFLA_ADDRESS"):
            attrs["address"] = mac.lower()
        ipr.link("set", index=index, **attrs)
        for addr in ipr.get_addr(index=index, family=2 if version == 4 else 10):
            if addr["scope"] == 0 and (addr.get("IFA_ADDRESS") != str(ip)
                                       or addr["prefixlen"] != host_len):
                ipr.addr("del", index=index, address=addr.get("IFA_ADDRESS"),
                         prefixlen=addr["prefixlen"])
        try:
            # No duplicate address detection: the address is ours by IPAM.
            ipr.addr("add", index=index, address=str(ip), prefixlen=host_len,
                     **({} if version == 4 else {"flags": IFA_F_NODAD}))
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
        return ipr.link("get", index=index)[0].get("IFLA_ADDRESS").lower()


def _configured_as_wanted(link, local_ip: IPAddress) -> bool:
    if link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) != "vxlan":
        return False
    data = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    local = data.get("IFLA_VXLAN_LOCAL" if local_ip.version == 4 else "IFLA_VXLAN_LOCAL6")
    return (data.get("IFLA_VXLAN_ID") == VNI and data.get("IFLA_VXLAN_PORT") == PORT
            and local is not None and IPAddress(local) == local_ip
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
