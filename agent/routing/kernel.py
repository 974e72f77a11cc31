"""The agent's netlink work: reading and reconciling its routes (recognised
by their protocol number, and nothing else is ever touched), the static ARP
and FDB entries on vxlan.calico, and the host facts routing depends on.

Reads use the thread's IPRoute and changes go a few hundred to a write on
its netlink socket, each acked (kernel/netlink.py, as the driver's); "exists"
or "already gone" answers count as done, so every step can be replayed.
"""

import errno
import logging
import socket
import sys
from typing import NamedTuple

from netaddr import IPAddress, IPNetwork

from agent.routing.routes import UNICAST, FdbEntry, Neighbour, Route
from kernel import netlink
from kernel.netlink import (MAIN_TABLE, NDA_DST, NDA_LLADDR, RT_TYPES, RTA_DST, RTA_GATEWAY,
                            RTA_OIF, RTA_TABLE)

LOG = logging.getLogger(__name__)

# rtnetlink protocol of every route the agent makes: unnamed in
# /etc/iproute2/rt_protos and used by none of the kernel (2), static routes
# (4), dockerd or BIRD (12).  "ip route show proto 80" lists ours.
ROUTE_PROTOCOL = 80
RTNH_F_ONLINK = 4
NTF_SELF = 2
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
_AF_INET, _AF_INET6, _AF_BRIDGE = 2, 10, 7
FAMILIES = {4: _AF_INET, 6: _AF_INET6}
_RT_TYPES = {number: name for name, number in RT_TYPES.items()}  # routes.UNICAST, BLACKHOLE
_GONE = (errno.ESRCH, errno.ENOENT, errno.ENODEV)


class Changes(NamedTuple):
    added: list
    replaced: list
    removed: list

    def __bool__(self):
        return bool(self.added or self.replaced or self.removed)


def diff(desired: dict, current: dict) -> Changes:
    """What turns current into desired (both: key -> entry)."""
    return Changes([v for k, v in desired.items() if k not in current],
                   [v for k, v in desired.items() if k in current and current[k] != v],
                   [v for k, v in current.items() if k not in desired])


# -- routes ---------------------------------------------------------------

def read_routes() -> dict[IPNetwork, Route]:
    """Our routes in the main table (IPv4 and IPv6), as Route values."""
    with netlink.rtnl() as nl:
        names = _LinkNames()
        found = {}
        for family in (_AF_INET, _AF_INET6):
            for (_, dst_len, _, _, table, protocol, _, rt_type, flags), attrs in \
                    _dumped(nl, "list routes", "route", family):
                kind = _RT_TYPES.get(rt_type)
                if protocol != ROUTE_PROTOCOL or kind is None or \
                        (_u32(attrs.get(RTA_TABLE)) or table) != MAIN_TABLE:
                    continue
                dst = IPNetwork(f"{_address(family, attrs.get(RTA_DST))}/{dst_len}")
                gateway = attrs.get(RTA_GATEWAY)
                found[dst] = Route(dst, kind,
                                   IPAddress(_address(family, gateway)) if gateway else None,
                                   names[_u32(attrs.get(RTA_OIF))] if kind == UNICAST else None,
                                   bool(flags & RTNH_F_ONLINK))
        return found


def _dumped(nl, action: str, kind: str, family: int):
    try:
        return nl.dump(kind, family)
    except OSError as exc:
        raise netlink.refused(action, exc) from exc


def _address(family: int, packed: bytes | None) -> str:
    """The address an attribute holds; the family's any-address when none."""
    return socket.inet_ntop(family, packed) if packed else ("0.0.0.0" if family == _AF_INET
                                                           else "::")


def _u32(packed: bytes | None) -> int | None:
    return None if packed is None else int.from_bytes(packed, sys.byteorder)


def same_route(desired: Route, kernel: Route) -> bool:
    # A desired route without a device lets the kernel pick the gateway's.
    return desired == (kernel._replace(dev=None) if desired.dev is None else kernel)


def apply_routes(changes: Changes) -> tuple[list[str], list[Route]]:
    """Program the changes, a few hundred to a netlink write.  Returns the
    failures (a message each) and the added routes left out because a route
    not ours already has that destination (routes of other protocols are
    never touched)."""
    # "add" refuses to overwrite; only a route already ours is replaced.
    steps = [("del", r) for r in changes.removed] + [("add", r) for r in changes.added] \
        + [("replace", r) for r in changes.replaced]
    failed, foreign = [], []

    def outcome(command, route, error):
        if command == "del":
            if error.code not in _GONE:
                failed.append(f"delete {route}: {error}")
        elif command == "add" and error.code == errno.EEXIST:
            foreign.append(route)
        else:
            failed.append(f"program {route}: {error}")
    _apply("program routes", "route", steps,
           lambda command, route: _del_args(route) if command == "del" else _route_args(route),
           outcome, failed)
    return failed, foreign


def _apply(action: str, kind: str, steps, arguments, outcome, failed: list[str]) -> None:
    """Send each step, (command, what), with arguments(command, what), in
    as few writes as netlink takes; outcome(command, what, error) for each
    refused.  A step whose arguments cannot be made is a failure of its own."""
    with netlink.rtnl() as nl:
        sent, messages = [], []
        for command, what in steps:
            try:
                messages.append(nl.message(kind, command, arguments(command, what)))
                sent.append((command, what))
            except (LookupError, ValueError) as exc:
                failed.append(f"program {what}: {exc}")
        try:
            errors = nl.send(messages)
        except OSError as exc:
            raise netlink.refused(action, exc) from exc
    for (command, what), error in zip(sent, errors):
        if error is not None:
            outcome(command, what, error)


def _del_args(route: Route) -> dict:
    """What names a route of ours to delete it."""
    return {"dst": str(route.dst), "table": MAIN_TABLE, "proto": ROUTE_PROTOCOL,
            "type": route.type, "family": FAMILIES[route.dst.version]}


def _route_args(route: Route) -> dict:
    args = _del_args(route)
    if route.gateway is not None:
        args["gateway"] = str(route.gateway)
    if route.dev is not None:
        args["oif"] = netlink.index(route.dev)
        if args["oif"] is None:
            raise LookupError(f"no interface {route.dev}")
    if route.onlink:
        args["flags"] = RTNH_F_ONLINK
    return args


def route_diff(desired: dict[IPNetwork, Route], current: dict[IPNetwork, Route]) -> Changes:
    changes = diff(desired, current)
    # Entries that differ only by the kernel's choice of device are right.
    replaced = [r for r in changes.replaced if not same_route(r, current[r.dst])]
    return Changes(changes.added, replaced, changes.removed)


# -- static ARP and FDB entries on a VXLAN device --------------------------

def read_vxlan_peers(device: str, version: int = 4) -> tuple[set[Neighbour], set[FdbEntry]]:
    """The permanent ARP (IPv6: neighbour) entries and unicast FDB entries
    on device."""
    device_index = netlink.index(device)
    if device_index is None:
        return set(), set()
    action = f"list neighbours of {device}"
    with netlink.rtnl() as nl:
        family = FAMILIES[version]
        neighbours = {Neighbour(IPAddress(_address(family, attrs[NDA_DST])),
                                _mac(attrs[NDA_LLADDR]))
                      for (_, index, state, _, _), attrs in _dumped(nl, action, "neigh", family)
                      if index == device_index and state & NUD_PERMANENT
                      and NDA_DST in attrs and NDA_LLADDR in attrs}
        fdb = set()
        for (_, index, _, _, _), attrs in _dumped(nl, action, "neigh", _AF_BRIDGE):
            dst, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
            if index == device_index and dst and mac and any(mac):
                fdb.add(FdbEntry(_mac(mac), IPAddress(_address(
                    _AF_INET if len(dst) == 4 else _AF_INET6, dst))))
        return neighbours, fdb


def _mac(packed: bytes) -> str:
    return ":".join(f"{b:02x}" for b in packed)


def apply_vxlan_peers(device: str, neighbours: Changes, fdb: Changes) -> list[str]:
    """Program the changes, a few hundred to a netlink write; the failures."""
    device_index = netlink.index(device)
    if device_index is None:
        return [f"{device} does not exist"]
    on_device = {"ifindex": device_index}
    fdb_entry = {**on_device, "family": _AF_BRIDGE, "state": NUD_PERMANENT | NUD_NOARP,
                 "flags": NTF_SELF}  # the device's own table, as `bridge fdb ... self`
    steps = [("del", dict(on_device, dst=str(n.ip), lladdr=n.mac, family=FAMILIES[n.ip.version]))
             for n in neighbours.removed]
    steps += [("del", dict(fdb_entry, lladdr=f.mac, dst=str(f.dst))) for f in fdb.removed]
    steps += [("replace", dict(on_device, dst=str(n.ip), lladdr=n.mac, state=NUD_PERMANENT,
                               family=FAMILIES[n.ip.version]))
              for n in neighbours.added + neighbours.replaced]
    steps += [("replace", dict(fdb_entry, lladdr=f.mac, dst=str(f.dst)))
              for f in fdb.added + fdb.replaced]
    failed = []

    def outcome(command, args, error):
        if not (command == "del" and error.code in _GONE):
            failed.append(f"{command} {args} on {device}: {error}")
    _apply(f"program neighbours of {device}", "neigh", steps, lambda _, args: args,
           outcome, failed)
    return failed


# -- host facts -------------------------------------------------------------

class Address(NamedTuple):
    ifname: str
    index: int
    network: IPNetwork  # the address with its prefix length


def addresses(version: int = 4) -> list[Address]:
    """Global (not link-local) addresses of one IP version on this
    namespace's interfaces, by link index."""
    with netlink.iproute("list addresses") as ipr:
        names = _LinkNames()
        found = [Address(names[index] or "", index, network)
                 for index, network in _global_addresses(ipr, version)]
        return sorted(found, key=lambda a: a.index)


def connected_subnets() -> tuple[IPNetwork, ...]:
    """The subnets of this host's global IPv4 and IPv6 addresses (no link
    names: a host with 1,000 containers has 1,000 veths to list for them)."""
    with netlink.iproute("list addresses") as ipr:
        return tuple(sorted({network.cidr for v in (4, 6)
                             for _, network in _global_addresses(ipr, v)},
                            key=lambda n: (n.version, n)))


def mtu_of_address(ip: IPAddress) -> int | None:
    """The MTU of the interface that holds ip."""
    for address in addresses(ip.version):
        if address.network.ip == ip:
            with netlink.iproute(f"read the MTU of {address.ifname}") as ipr:
                return ipr.link("get", index=address.index)[0].get("IFLA_MTU")
    return None


def link_exists(ifname: str) -> bool:
    return netlink.index(ifname) is not None


def _global_addresses(ipr, version: int):
    """(link index, address with its prefix) of each global address."""
    return [(a["index"], IPNetwork(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"))
            for a in ipr.get_addr(family=FAMILIES[version]) if a["scope"] == 0]


class _LinkNames(dict):
    """Link index -> its name (None: no such link), asked of the kernel for
    each index met (if_indextoname), not by listing every link: a host with
    1,000 containers has 1,000 veths, which cost pyroute2 0.1 s and 20 MB
    of messages to list."""

    def __missing__(self, index):
        name = self[index] = None if index is None else netlink.name(index)
        return name
