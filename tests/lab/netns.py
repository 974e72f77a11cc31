"""Network namespaces for the lab, and the links and routes between them.

Namespaces get run-unique names (see common.lab_name), so methods below take
the full name that Lab.netns() returned. Links live inside lab namespaces
and disappear with them, so closing the Lab only has to delete namespaces.
"""

import os
import pickle
from functools import partial

from pyroute2 import netns as pyroute2_netns

from .common import delete_netns, ip, lab_name, run_all, run_dir


def add_netns(netns):
    """Create namespace `netns` (a full name) with its loopback up."""
    run_dir()  # claim the run first, so a concurrent sweep knows it is ours
    ip("netns", "add", netns)
    ip("link", "set", "lo", "up", netns=netns)


class Lab:
    """Remembers the namespaces it made and deletes them (with every link,
    address, route and process inside) in close()."""

    def __init__(self):
        self.namespaces = []

    def netns(self, name):
        """Create namespace `name` (made run-unique) and return its full name."""
        netns = lab_name(name)
        add_netns(netns)
        self.namespaces.append(netns)
        return netns

    def veth(self, netns_a, if_a, netns_b, if_b, cidr_a=None, cidr_b=None):
        """Link `if_a` in `netns_a` to `if_b` in `netns_b`, both up,
        with optional addresses such as "10.0.0.1/24"."""
        ip("link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", netns_b,
           netns=netns_a)
        for netns, ifname, cidr in ((netns_a, if_a, cidr_a), (netns_b, if_b, cidr_b)):
            if cidr:
                self.addr(netns, ifname, cidr)
            ip("link", "set", ifname, "up", netns=netns)

    def segment(self, name, *members):
        """A namespace `name` holding bridge br0, with each (netns, cidr) of
        `members` linked to it by its eth1 (port p1, p2, ... on the bridge):
        hosts on one Ethernet segment.  Returns the segment's namespace."""
        seg = self.netns(name)
        ip("link", "add", "br0", "type", "bridge", netns=seg)
        ip("link", "set", "br0", "up", netns=seg)
        for n, (netns, cidr) in enumerate(members, 1):
            self.veth(netns, "eth1", seg, f"p{n}", cidr)
            ip("link", "set", f"p{n}", "master", "br0", netns=seg)
        return seg

    def workload(self, host, name, host_ifname, address):
        """A namespace wired as Calico wires a container, without Docker:
        `address`/32 on its eth0, routed through 169.254.1.1 to `host_ifname`
        in namespace `host` (which carries 169.254.1.1 and a /32 route back)."""
        netns = self.netns(name)
        self.veth(host, host_ifname, netns, "eth0")
        ip("addr", "add", "169.254.1.1/32", "scope", "host", "dev", host_ifname, netns=host)
        ip("route", "add", f"{address}/32", "dev", host_ifname, netns=host)
        ip("addr", "add", f"{address}/32", "dev", "eth0", netns=netns)
        ip("route", "add", "169.254.1.1", "dev", "eth0", netns=netns)
        ip("route", "add", "default", "via", "169.254.1.1", netns=netns)
        return netns

    def sink(self, netns, ifname, cidr=None):
        """An interface that drops everything routed to it, up. It is an ifb
        device: this kernel has no `dummy` driver, and an ifb drops what it
        is sent unless tc redirects traffic into it."""
        ip("link", "add", ifname, "type", "ifb", netns=netns)
        if cidr:
            self.addr(netns, ifname, cidr)
        ip("link", "set", ifname, "up", netns=netns)

    def addr(self, netns, ifname, cidr):
        ip("addr", "add", cidr, "dev", ifname, netns=netns)

    def route(self, netns, dst, via=None, dev=None):
        """Add or replace route `dst` ("default", "10.2.0.0/16", ...)."""
        args = ["route", "replace", dst]
        args += ["via", via] if via else []
        args += ["dev", dev] if dev else []
        ip(*args, netns=netns)

    def delete(self, netns):
        """Delete one namespace of this lab now (killing what runs in it)."""
        delete_netns(netns)
        self.namespaces.remove(netns)

    def close(self):
        run_all(*(partial(self.delete, netns) for netns in reversed(self.namespaces)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_in(ns, fn, *args, **kwargs):
    """Run fn in a child that joined namespace ns; return or raise its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            try:
                pyroute2_netns.setns(ns, flags=0)
                out = ('ok', fn(*args, **kwargs))
            except BaseException as e:  # noqa: B036 - reported to the parent
                out = ('err', e)
            try:
                data = pickle.dumps(out)
            except Exception:
                data = pickle.dumps(('err', RuntimeError(repr(out))))
            with os.fdopen(w, 'wb') as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, 'rb') as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status == 'err':
        raise value
    return value
