"""Host side of a Calico workload's networking, programmed through netlink.

Calico's routed model: each container gets a veth pair. The host reaches
the container through a ``/32 dev cali<id> scope link`` route, and the
container reaches everything through its gateway 169.254.1.1, which the host
end (``cali<id>``) carries as ``169.254.1.1/32 scope host``. For IPv6 the
host end carries ``fe80::1`` (the container's gateway) and a ``/128`` route.
Docker moves the other end (``temp<id>``) into the container, renames it and
gives it its address and the routes the driver returned from Join.

Why an address, where Calico relies on proxy ARP alone: Linux answers ARP
by proxy only for a target it routes through another interface, in practice
through the default route, so on a host without one (air-gapped sites,
Calico issue #3270) containers reached nothing. An ARP for a local address
needs no route. ``scope host`` keeps the kernel from choosing 169.254.1.1 as
the source of the host's own packets: the host still talks to its containers
from its usual address. On each veth rather than once on a device of ours,
because with net.ipv4.conf.all.arp_ignore=1 (load balancers, IPVS) Linux
answers only for addresses of the interface the ARP came in on. With
arp_ignore 2 or more it refuses even that, so the host end then gets no
address and proxy ARP, kept on every host end, answers as it always did.
Never delete the address on its own: when a link loses its last IPv4
address the kernel flushes every route through it.

Each host end is hardened as Felix hardens workload interfaces: a strict
reverse-path filter for IPv4 (a second line behind the anti-spoofing table,
agent/antispoofing.py, which also covers IPv6) and no router advertisements
accepted from the container.

Netlink goes through kernel/netlink.py: the thread's socket, kept between
calls.  The requests that can go together (a Join's addresses and routes, a
Leave's route deletes) go in one send, each with its own ack; queries (link
get and dump) happen only on replays and at start.  Every function can be
replayed: "exists" on create and "no such device/route" on delete mean the
work is already done.  Every failure is a KernelError (kernel/errors.py)
whose message is meant for the user.

Sysctls are written under /proc/sys, which always shows the network namespace
of the calling process, like the netlink socket does.
"""

import errno
import ipaddress
import os
import re
import socket

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import rt_scope
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from kernel import netlink
from kernel.errors import KernelError
from kernel.netlink import MAIN_TABLE

__all__ = [
    'add_ipv4_gateway',
    'arp_answers_local_gateway',
    'harden',
    'set_up_veth',
    'remove_veth',
    'remove_routes',
    'restore_routes',
    'host_routes',
    'link_exists',
    'links',
    'link_names',
]

IPV4_GATEWAY = '169.254.1.1'
_RTF_LOCAL_OR_ANYCAST = 0x80000000 | 0x00100000  # /proc/net/ipv6_route's flags
IPV6_GATEWAY = 'fe80::1'

# Calico's validator accepts exactly these names for interfaceName; the
# kernel limit is 15 bytes (IFNAMSIZ minus the NUL).
_IFNAME = re.compile(r'^[A-Za-z0-9_.-]{1,15}$')
_MAC = re.compile(r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$')


# ---------------------------------------------------------------- public API


def set_up_veth(host_ifname, temp_ifname, ipv4_addrs=(), ipv6_addrs=(), mtu=None,
                mac=None, proc_sys='/proc/sys', published=False):
    """Join's host side: the veth pair ``host_ifname`` <-> ``temp_ifname``,
    with ``host_ifname`` made the routed gateway of the container's addresses.

    The host end is up, with forwarding and proxy ARP and, for IPv4, the
    ``169.254.1.1`` gateway address (IPv6: proxy NDP and ``fe80::1``), and
    ``/32`` and ``/128`` host routes to the addresses.  The temp end stays
    down: dockerd moves it into the container, which takes a link down
    anyway, and brings it up there.  ``mtu`` applies to both ends, ``mac``
    to the temp end.  An existing pair with exactly these names is kept and
    brought to the asked state; a ``host_ifname`` left over with any other
    peer is replaced.  ``proc_sys``: where /proc/sys is writable (a managed
    plugin's own /proc/sys is read-only; its config.json mounts the host's
    elsewhere).  ``published``: the endpoint publishes host ports, which the
    host's own connections to 127.0.0.1 reach too (route_localnet).  Bad
    arguments change nothing; on any other failure the pair
    is removed, and ``KernelError`` says what failed.
    """
    _check_veth(host_ifname, temp_ifname, mtu, mac)
    v4 = _parse_addrs(ipv4_addrs, 4, host_ifname)
    v6 = _parse_addrs(ipv6_addrs, 6, host_ifname)
    with netlink.rtnl() as nl:
        index = _create_veth(nl, host_ifname, temp_ifname, mtu, mac)
        try:
            _program_host_side(nl, index, host_ifname, v4, v6, proc_sys)
            if published:
                # The host's connection to 127.0.0.1:<port>, DNATed to the
                # container, leaves through this interface with its source
                # 127.0.0.1 (the agent masquerades it after routing): the
                # kernel refuses that route unless the interface allows
                # loopback addresses, as Docker sets on its bridges.  The
                # agent drops what a container sends to 127.0.0.0/8 through
                # it (agent/published.py).
                _sysctl(proc_sys, f'net/ipv4/conf/{host_ifname}/route_localnet')
        except KernelError:
            _delete_link(nl, host_ifname, f'clean up {host_ifname}', quiet=True)
            raise


def _check_veth(host_ifname, temp_ifname, mtu, mac):
    _check_ifname(host_ifname)
    _check_ifname(temp_ifname)
    if host_ifname == temp_ifname:
        raise KernelError(
            f'veth ends need two different names, got {host_ifname!r} twice'
        )
    if mac is not None and not _MAC.match(mac):
        raise KernelError(f'{mac!r} is not a MAC address (for {temp_ifname})')
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int)):
        raise KernelError(f'MTU for {host_ifname} must be an integer, got {mtu!r}')


def _create_veth(nl, host_ifname, temp_ifname, mtu, mac):
    """The pair, made or kept; returns the host end's index."""
    pair = f'veth pair {host_ifname}/{temp_ifname}'
    peer = {'ifname': temp_ifname}
    extra = {}
    if mtu is not None:
        peer['mtu'] = extra['mtu'] = mtu
    if mac is not None:
        peer['address'] = mac.lower()
    add = ('link', 'add', dict(ifname=host_ifname, kind='veth', peer=peer, state='up', **extra))
    # The common case first: nothing there yet.  The kernel creates both
    # ends atomically, so a failure leaves nothing to clean up.
    detail = f' with MTU {mtu}' if mtu is not None else ''
    if nl.change([(f'create {pair}{detail}', *add)], ok=(errno.EEXIST,)) != [None]:
        index = _reuse_or_clear(nl, host_ifname, temp_ifname, mtu, mac, pair)
        if index is not None:
            return index
        nl.change([(f'create {pair}', *add)])
    index = netlink.index(host_ifname)
    if index is None:  # deleted under us: nothing of ours is left
        raise KernelError(f'{host_ifname} vanished while it was being created')
    return index


def _reuse_or_clear(nl, host_ifname, temp_ifname, mtu, mac, pair):
    """After EEXIST: the host end's index when exactly our pair exists (a
    replay; brought to the asked state), None after removing a stale host
    end; raise when temp_ifname belongs to something else, which we must
    not touch."""
    host = _get_link(host_ifname)
    if host is not None and _peer_name(host) == temp_ifname:
        _set_up_pair(host['index'], temp_ifname, mtu, mac, pair)
        return host['index']
    if host is None or _get_link(temp_ifname) is not None:
        raise KernelError(
            f'cannot create {pair}: an interface named '
            f'{temp_ifname if host is None else host_ifname + " or " + temp_ifname} '
            f'already exists and is not part of this pair')
    # A leftover from an endpoint that was never cleaned up: its routes and
    # peer are stale, so start from scratch.
    _delete_link(nl, host_ifname, f'remove stale {host_ifname}')
    return None


def _program_host_side(nl, index, host_ifname, v4, v6, proc_sys):
    """Make the (up) host end the routed gateway for the given container
    IPs: the sysctls, then the addresses and routes in one send."""
    _sysctl(proc_sys, 'net/ipv4/ip_forward')
    _harden(proc_sys, host_ifname)
    _sysctl(proc_sys, f'net/ipv4/conf/{host_ifname}/forwarding')
    _sysctl(proc_sys, f'net/ipv4/conf/{host_ifname}/proxy_arp')
    # The default proxy_delay holds ARP replies back up to 0.8 s.
    _sysctl(proc_sys, f'net/ipv4/neigh/{host_ifname}/proxy_delay', '0')
    changes = []
    if v4:
        gateway = _ipv4_gateway(index, host_ifname, proc_sys)
        if gateway is not None:
            changes.append(gateway)
    if v6:
        _sysctl(proc_sys, 'net/ipv6/conf/all/forwarding')
        _sysctl(proc_sys, f'net/ipv6/conf/{host_ifname}/forwarding')
        _sysctl(proc_sys, f'net/ipv6/conf/{host_ifname}/proxy_ndp')
        # NODAD: the container uses fe80::1 as its gateway at once;
        # with DAD it would stay tentative (unanswered) for a second.
        changes.append((
            f'add {IPV6_GATEWAY} to {host_ifname}', 'addr', 'replace',
            dict(index=index, address=IPV6_GATEWAY, prefixlen=64, flags=IFA_F_NODAD),
        ))
    nl.change(changes + _route_changes(index, host_ifname, v4, v6))


def _route_changes(index, host_ifname, v4, v6):
    """The host routes to a container's addresses through its host end."""
    return [
        (f'add route {addr}/32 dev {host_ifname}', 'route', 'replace',
         dict(dst=f'{addr}/32', oif=index, scope='link', table=MAIN_TABLE))
        for addr in v4
    ] + [
        (f'add route {addr}/128 dev {host_ifname}', 'route', 'replace',
         dict(dst=f'{addr}/128', oif=index, table=MAIN_TABLE))
        for addr in v6
    ]


def restore_routes(host_ifname, ipv4_addrs=(), ipv6_addrs=()):
    """Put back the host routes to a joined container's addresses (someone
    deleted them); False when the host end is gone, which no route mends."""
    _check_ifname(host_ifname)
    v4 = _parse_addrs(ipv4_addrs, 4, host_ifname)
    v6 = _parse_addrs(ipv6_addrs, 6, host_ifname)
    index = netlink.index(host_ifname)
    if index is None:
        return False
    with netlink.rtnl() as nl:
        nl.change(_route_changes(index, host_ifname, v4, v6))
    return True


def host_routes(prefix):
    """{address: interface} of the main table's /32 and /128 routes through
    links whose name starts with ``prefix``.  Read from the calling
    thread's /proc/thread-self/net (the namespace its netlink socket acts
    in): a netlink dump through pyroute2 decodes every attribute of every
    route, a second for a thousand containers on a busy host."""
    found = {}
    with open('/proc/thread-self/net/route', encoding='ascii') as f:
        next(f)  # the heading
        for line in f:
            iface, dest, *_, mask = line.split()[:8]
            if mask == 'FFFFFFFF' and iface.startswith(prefix):
                found[str(ipaddress.IPv4Address(bytes.fromhex(dest)[::-1]))] = iface
    try:
        with open('/proc/thread-self/net/ipv6_route', encoding='ascii') as f:
            for line in f:  # every table's: the local table's are flagged
                dest, length, *_, flags, iface = line.split()
                if length == '80' and iface.startswith(prefix) \
                        and not int(flags, 16) & _RTF_LOCAL_OR_ANYCAST:
                    found[str(ipaddress.IPv6Address(bytes.fromhex(dest)))] = iface
    except FileNotFoundError:
        pass  # IPv6 disabled
    return found


def add_ipv4_gateway(host_ifname, proc_sys='/proc/sys'):
    """Give an existing host end the ``169.254.1.1`` gateway address (one
    joined before the plugin did so at Join). A missing link is left alone.
    Returns False when the host's arp_ignore leaves ARP to proxy ARP."""
    _check_ifname(host_ifname)
    index = netlink.index(host_ifname)
    if index is None:
        return False
    gateway = _ipv4_gateway(index, host_ifname, proc_sys)
    if gateway is None:
        return False
    with netlink.rtnl() as nl:
        nl.change([gateway])
    return True


def harden(host_ifname, proc_sys='/proc/sys'):
    """Apply the hardening sysctls to an existing host end (one joined
    before the plugin set them at Join).  A missing link is left alone."""
    _check_ifname(host_ifname)
    if netlink.index(host_ifname) is not None:
        _harden(proc_sys, host_ifname)


def arp_answers_local_gateway(proc_sys='/proc/sys'):
    """True when this host answers an ARP for an address of the interface
    it arrives on: net.ipv4.conf.all.arp_ignore is 0 or 1 (the per-interface
    value counts too, but ours is set to 0)."""
    return _read_sysctl(proc_sys, 'net/ipv4/conf/all/arp_ignore') in ('0', '1')


def remove_veth(host_ifname):
    """Delete the veth pair (either end takes the other and its routes)."""
    _check_ifname(host_ifname)
    with netlink.rtnl() as nl:
        _delete_link(nl, host_ifname, f'remove {host_ifname}')


def remove_routes(ipv4_addrs=(), ipv6_addrs=(), host_ifname=None):
    """Delete the ``/32`` and ``/128`` host routes for these addresses.

    With ``host_ifname`` only routes through that interface go, so an
    address already reused by another endpoint keeps its route. Missing
    routes (or a missing interface) count as already removed.
    """
    if host_ifname is not None:
        _check_ifname(host_ifname)
    v4 = _parse_addrs(ipv4_addrs, 4, host_ifname or 'routes')
    v6 = _parse_addrs(ipv6_addrs, 6, host_ifname or 'routes')
    match = {}
    if host_ifname is not None:
        match['oif'] = netlink.index(host_ifname)
        if match['oif'] is None:
            return  # the kernel removed its routes with it
    # IPv4 deletes match the scope exactly (pyroute2 sends "universe"
    # unless told), so name ours; IPv6 routes have no scope.
    wanted = [(f'{a}/32', {'scope': 'link'}) for a in v4]
    wanted += [(f'{a}/128', {}) for a in v6]
    with netlink.rtnl() as nl:
        nl.change([
            (f'remove route {dst}', 'route', 'del',
             dict(dst=dst, table=MAIN_TABLE, **scope, **match))
            for dst, scope in wanted
        ], ok=(errno.ESRCH, errno.ENODEV, errno.ENOENT))


def link_names(prefix):
    """The names of the links that start with ``prefix``."""
    return {name for name in _link_names().values() if name.startswith(prefix)}


def _link_names():
    """{index: name} of every link, from the C library's dump of names only:
    pyroute2 decodes every attribute of every link, some 5 ms a veth on a
    busy host, 10 s for a thousand containers."""
    try:
        return dict(socket.if_nameindex())
    except OSError as e:
        raise KernelError(f'could not list links: {e.strerror or e}') from e


def link_exists(ifname):
    """True when ``ifname`` exists in this network namespace."""
    _check_ifname(ifname)
    return netlink.index(ifname) is not None


def links(prefix):
    """{name: MAC} of the links whose name starts with ``prefix``."""
    with netlink.iproute('list links') as ipr:
        found = {}
        for link in ipr.link('dump'):
            name = link.get('IFLA_IFNAME') or ''
            if name.startswith(prefix):
                found[name] = (link.get('IFLA_ADDRESS') or '').lower() or None
        return found


# ------------------------------------------------------------------ helpers


def _check_ifname(name):
    if not isinstance(name, str) or not _IFNAME.match(name) or name in ('.', '..'):
        raise KernelError(
            f'invalid interface name {name!r}: use 1 to 15 characters '
            f'from A-Z a-z 0-9 _ . -'
        )


def _parse_addrs(addrs, version, ifname):
    if isinstance(addrs, str):
        addrs = [addrs]
    parsed = []
    for text in addrs or ():
        try:
            addr = ipaddress.ip_address(text)
        except (TypeError, ValueError):
            addr = None
        if addr is None or addr.version != version:
            raise KernelError(
                f'{text!r} is not an IPv{version} address (for {ifname})'
            )
        parsed.append(addr.compressed)
    return parsed


def _get_link(ifname):
    with netlink.iproute(f'look up {ifname}') as ipr:
        try:
            return ipr.link('get', ifname=ifname)[0]
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise


def _peer_name(link):
    """Name of a veth's peer when it is in this namespace, else None."""
    if link.get(('IFLA_LINKINFO', 'IFLA_INFO_KIND')) != 'veth':
        return None
    # A netnsid means the peer lives in another namespace (already handed
    # to a container), where the index means nothing to us.
    if link.get('IFLA_LINK_NETNSID') is not None:
        return None
    peer_index = link.get('IFLA_LINK')
    if not peer_index:
        return None
    with netlink.iproute(f'look up the peer of {link.get("IFLA_IFNAME")}') as ipr:
        try:
            return ipr.link('get', index=peer_index)[0].get('IFLA_IFNAME')
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise


def _set_up_pair(host_index, temp_ifname, mtu, mac, pair):
    """An existing pair as a new one would be: the host end up (IPv4 routes
    cannot be added to, and are flushed from, a link that is down), the MTU
    and the temp end's MAC as asked."""
    host_attrs = {'state': 'up'}
    temp_attrs = {}
    if mtu is not None:
        host_attrs['mtu'] = temp_attrs['mtu'] = mtu
    if mac is not None:
        temp_attrs['address'] = mac.lower()
    with netlink.iproute(f'set up {pair}') as ipr:
        ipr.link('set', index=host_index, **host_attrs)
        if temp_attrs:
            ipr.link('set', ifname=temp_ifname, **temp_attrs)


def _delete_link(nl, ifname, action, quiet=False):
    try:
        nl.change([(action, 'link', 'del', {'ifname': ifname})], ok=(errno.ENODEV,))
    except KernelError:
        if not quiet:
            raise


def _ipv4_gateway(index, ifname, proc_sys):
    """The change giving the host end the gateway address, None when the
    host's arp_ignore leaves ARP to proxy ARP."""
    # The kernel uses the larger of "all" and the interface's own arp_ignore;
    # a new interface copies "default", which we do not want for ours.
    _sysctl(proc_sys, f'net/ipv4/conf/{ifname}/arp_ignore', '0')
    if not arp_answers_local_gateway(proc_sys):
        return None
    return (f'add {IPV4_GATEWAY} to {ifname}', 'addr', 'replace',
            dict(index=index, address=IPV4_GATEWAY, prefixlen=32, scope=rt_scope['host']))


def _harden(proc_sys, ifname):
    # Strict: a packet from the container must carry a source the host
    # routes back out of this interface.  The kernel applies the larger of
    # "all" and the interface's value, so all=2 (loose) wins over this; the
    # anti-spoofing table checks regardless.
    _sysctl(proc_sys, f'net/ipv4/conf/{ifname}/rp_filter')
    # A router advertisement from a container must never make it the host's
    # IPv6 default gateway.  The default (1) takes them while IPv6
    # forwarding is off, as it is on an IPv4-only endpoint's interface.
    # Felix sets it even without IPv6 support; with IPv6 disabled at boot
    # there is no such file, nor any IPv6 to protect.
    if os.path.isdir(f'{proc_sys}/net/ipv6/conf/{ifname}'):
        _sysctl(proc_sys, f'net/ipv6/conf/{ifname}/accept_ra', '0')


def _read_sysctl(root, key):
    try:
        with open(f'{root}/{key}') as f:
            return f.read().strip()
    except OSError as e:
        raise KernelError(f'could not read {key.replace("/", ".")}: {e.strerror}') from e


def _sysctl(root, key, value='1'):
    path = f'{root}/{key}'
    try:
        with open(path) as f:
            if f.read().strip() == value:
                # Skip the write: one to net.ipv6.conf.all.forwarding takes
                # the RTNL lock and walks every interface even if unchanged.
                return
        with open(path, 'w') as f:
            f.write(value)
    except OSError as e:
        hint = ' (is IPv6 disabled on this host?)' if key.startswith('net/ipv6') else ''
        raise KernelError(
            f'could not set {key.replace("/", ".")}={value}: {e.strerror}{hint}'
        ) from e
