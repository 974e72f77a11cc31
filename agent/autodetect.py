"""This node's IPv4 (IPv6) address, found as calico/node's
IP_AUTODETECTION_METHOD (IP6_AUTODETECTION_METHOD):

* first-found: the first global address of the version, by interface index, on an
  interface not in calico/node's exclude list (plus br-*, ifb* and docker's
  own bridges); the interface of the default route goes first, so a host
  with a default route picks the address it talks to the world with;
* interface=REGEX: the first address on an interface whose name matches;
* can-reach=ADDRESS: the source address the kernel would use to reach
  ADDRESS (a route lookup: no packet is sent).

The result is the address with its interface's prefix length, "10.0.0.11/24"
("fd00::11/64"); link-local IPv6 addresses never count.  node_address and
node_address6 give the address the settings name (IP, IP6), else the one
found; both `run` (registering the node before it serves) and the agent use
them.
"""

import re

from netaddr import AddrFormatError, IPAddress, IPNetwork
from pyroute2.netlink.exceptions import NetlinkError

from agent.errors import AutodetectError
from agent.routing.kernel import FAMILIES, Address, addresses
from agent.settings import AgentSettings, variable
from kernel import netlink
from kernel.netlink import MAIN_TABLE

# calico/node's DEFAULT_INTERFACES_TO_EXCLUDE, plus what docker and our lab make.
EXCLUDED = re.compile(
    r"^(docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|lo|cali.*|tunl.*|flannel.*|"
    r"kube-ipvs.*|cni.*|vxlan\.calico.*|vxlan-v6\.calico.*|vxlan.*|wireguard\.cali.*|"
    r"wg-v6\.cali.*|nodelocaldns.*|podman.*|br-.*|ifb.*)$")


def node_address(settings: AgentSettings) -> IPNetwork:
    """IP as set (Config has checked it), else autodetected."""
    if settings.ip:
        return IPNetwork(settings.ip)
    return detect(settings.ip_autodetection_method)


def node_address6(settings: AgentSettings) -> IPNetwork | None:
    """IP6: None for none (calico/node's default), else the address."""
    if settings.ip6 == "none":
        return None
    if settings.ip6 == "autodetect":
        return detect(settings.ip6_autodetection_method, 6)
    return IPNetwork(settings.ip6)


def detect(method: str, version: int = 4) -> IPNetwork:
    if method.startswith("interface="):
        return _by_interface(method[len("interface="):], version)
    if method.startswith("can-reach="):
        return _can_reach(method[len("can-reach="):], version)
    return _first_found(version)


def _first_found(version: int) -> IPNetwork:
    candidates = [a for a in addresses(version) if not EXCLUDED.match(a.ifname)]
    if not candidates:
        ip, method = variable("IP", version), variable("IP_AUTODETECTION_METHOD", version)
        raise AutodetectError(
            f"no IPv{version} address found on this host's interfaces (first-found skips "
            "docker*, veth*, cali*, vxlan*, tunl*, br-*, lo, ...); set "
            f"{ip}=<address>/<prefix> or {method}=interface=<name> or can-reach=<address>"
            + (" (or IP6=none)" if version == 6 else ""))
    default_index = _default_route_index(version)
    preferred = [a for a in candidates if a.index == default_index]
    return (preferred or candidates)[0].network


def _by_interface(pattern: str, version: int) -> IPNetwork:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise AutodetectError(f"{variable('IP_AUTODETECTION_METHOD', version)}: "
                              f"interface={pattern!r} is not a valid regular expression: "
                              f"{exc}") from None
    found = addresses(version)
    for address in found:
        if regex.fullmatch(address.ifname):
            return address.network
    names = sorted({a.ifname for a in found})
    raise AutodetectError(f"no interface matching {pattern!r} has an IPv{version} address "
                          f"(interfaces with one: {', '.join(names) or 'none'})")


def _can_reach(target: str, version: int) -> IPNetwork:
    ip = variable("IP", version)
    try:
        dst = IPAddress(target)
    except (AddrFormatError, ValueError):
        dst = None
    if dst is None or dst.version != version:
        raise AutodetectError(f"{variable('IP_AUTODETECTION_METHOD', version)}: "
                              f"can-reach={target!r} is not an IPv{version} address") from None
    with netlink.iproute(f"look up the route to {dst}") as ipr:
        try:
            found = ipr.route("get", dst=str(dst), family=FAMILIES[version])
        except NetlinkError as exc:
            raise AutodetectError(f"this host has no route to {dst} ({exc}); "
                                  f"set {ip}=<address>/<prefix>") from None
    source = found[0].get("RTA_PREFSRC") if found else None
    address = _holding(source, version)
    if address is None:
        raise AutodetectError(f"the route to {dst} has no source address on this host; "
                              f"set {ip}=<address>/<prefix>")
    return address.network


def _holding(ip, version: int) -> Address | None:
    if not ip:
        return None
    return next((a for a in addresses(version) if a.network.ip == IPAddress(ip)), None)


def _default_route_index(version: int) -> int | None:
    with netlink.iproute("look up the default route") as ipr:
        for route in ipr.route("dump", family=FAMILIES[version], table=MAIN_TABLE, dst_len=0):
            if route.get("RTA_OIF"):
                return route.get("RTA_OIF")
    return None
