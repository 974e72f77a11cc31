"""This node's IPv4 address, found as calico/node's IP_AUTODETECTION_METHOD:

* first-found: the first global IPv4 address, by interface index, on an
  interface not in calico/node's exclude list (plus br-*, ifb* and docker's
  own bridges); the interface of the default route goes first, so a host
  with a default route picks the address it talks to the world with;
* interface=REGEX: the first address on an interface whose name matches;
* can-reach=ADDRESS: the source address the kernel would use to reach
  ADDRESS (a route lookup: no packet is sent).

The result is the address with its interface's prefix length, "10.0.0.11/24".
"""

import re

from netaddr import AddrFormatError, IPAddress, IPNetwork
from pyroute2.netlink.exceptions import NetlinkError

from agent.errors import AutodetectError
from agent.kernel import Address, ipv4_addresses, netlink

# calico/node's DEFAULT_INTERFACES_TO_EXCLUDE, plus what docker and our lab make.
EXCLUDED = re.compile(
    r"^(docker.*|cbr.*|dummy.*|virbr.*|lxcbr.*|veth.*|lo|cali.*|tunl.*|flannel.*|"
    r"kube-ipvs.*|cni.*|vxlan\.calico.*|vxlan-v6\.calico.*|vxlan.*|wireguard\.cali.*|"
    r"wg-v6\.cali.*|nodelocaldns.*|podman.*|br-.*|ifb.*)$")


def detect(method: str) -> IPNetwork:
    if method.startswith("interface="):
        return _by_interface(method[len("interface="):])
    if method.startswith("can-reach="):
        return _can_reach(method[len("can-reach="):])
    return _first_found()


def _first_found() -> IPNetwork:
    candidates = [a for a in ipv4_addresses() if not EXCLUDED.match(a.ifname)]
    if not candidates:
        raise AutodetectError(
            "no IPv4 address found on this host's interfaces (first-found skips docker*, "
            "veth*, cali*, vxlan*, tunl*, br-*, lo, ...); set IP=<address>/<prefix> or "
            "IP_AUTODETECTION_METHOD=interface=<name> or can-reach=<address>")
    default_index = _default_route_index()
    preferred = [a for a in candidates if a.index == default_index]
    return (preferred or candidates)[0].network


def _by_interface(pattern: str) -> IPNetwork:
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise AutodetectError(f"IP_AUTODETECTION_METHOD: interface={pattern!r} is not a "
                              f"valid regular expression: {exc}") from None
    for address in ipv4_addresses():
        if regex.fullmatch(address.ifname):
            return address.network
    names = sorted({a.ifname for a in ipv4_addresses()})
    raise AutodetectError(f"no interface matching {pattern!r} has an IPv4 address "
                          f"(interfaces with one: {', '.join(names) or 'none'})")


def _can_reach(target: str) -> IPNetwork:
    try:
        dst = IPAddress(target)
    except (AddrFormatError, ValueError):
        raise AutodetectError(f"IP_AUTODETECTION_METHOD: can-reach={target!r} is not an "
                              "IPv4 address") from None
    with netlink(f"look up the route to {dst}") as ipr:
        try:
            found = ipr.route("get", dst=str(dst))
        except NetlinkError as exc:
            raise AutodetectError(f"this host has no route to {dst} ({exc}); "
                                  "set IP=<address>/<prefix>") from None
    source = found[0].get("RTA_PREFSRC") if found else None
    address = _holding(source)
    if address is None:
        raise AutodetectError(f"the route to {dst} has no source address on this host; "
                              "set IP=<address>/<prefix>")
    return address.network


def _holding(ip) -> Address | None:
    return next((a for a in ipv4_addresses() if str(a.network.ip) == ip), None)


def _default_route_index() -> int | None:
    with netlink("look up the default route") as ipr:
        for route in ipr.route("dump", family=2, table=254, dst_len=0):
            if route.get("RTA_OIF"):
                return route.get("RTA_OIF")
    return None
