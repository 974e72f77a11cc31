"""A lab site for the names watchdog's tests and bench: a host running the
agent's name service (tests/agent/names_agent.py, its watchdog a child
process), a container wired as Calico wires one (IPv4 and IPv6), and the
host's nameservers in a namespace of their own.

    container eth0 10.65.0.2, fd65::2 -- cali (169.254.1.1, fe80::1) host
    host dns0 10.53.0.1/24, fd53::1/64 -- upstream 10.53.0.2, .3, fd53::2
"""

import os
import signal
import socket
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from dnslib import QTYPE, DNSRecord
from pyroute2 import netns as pyroute2_netns

from agent.names.health import responder_health
from tests.lab import LabProcess
from tests.lab.common import ip, run_dir, wait_until

REPO = str(__import__("pathlib").Path(__file__).resolve().parents[2])
QUERIER = ("10.65.0.2", "fd65::2")
NAMED = ("workload-e", "10.65.1.5")  # a container of another host, net1
EXTERNAL = ("external.example", "10.99.0.7")  # what every nameserver answers
NAMESERVERS = ("10.53.0.2", "10.53.0.3", "fd53::2")


class Site:
    def __init__(self, lab, tmp, host_ifname="cali0"):
        self.lab, self.tmp, self.host_ifname = lab, tmp, host_ifname
        self.host = lab.netns("names-host")
        self.upstream = lab.netns("names-up")
        self.container = lab.netns("names-wl")
        for ns in (self.host, self.upstream):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                            "net.ipv6.conf.all.forwarding=1"], check=True)
        cali = host_ifname
        lab.veth(self.host, cali, self.container, "eth0")
        ip("addr", "add", "169.254.1.1/32", "scope", "host", "dev", cali, netns=self.host)
        ip("addr", "add", "fe80::1/64", "dev", cali, "nodad", netns=self.host)
        ip("route", "add", f"{QUERIER[0]}/32", "dev", cali, netns=self.host)
        ip("route", "add", f"{QUERIER[1]}/128", "dev", cali, netns=self.host)
        ip("addr", "add", f"{QUERIER[0]}/32", "dev", "eth0", netns=self.container)
        ip("addr", "add", f"{QUERIER[1]}/128", "dev", "eth0", "nodad", netns=self.container)
        ip("route", "add", "169.254.1.1", "dev", "eth0", netns=self.container)
        ip("route", "add", "default", "via", "169.254.1.1", netns=self.container)
        ip("-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
           netns=self.container)
        lab.veth(self.host, "dns0", self.upstream, "dns0", "10.53.0.1/24", "10.53.0.2/24")
        lab.addr(self.upstream, "dns0", "10.53.0.3/24")
        ip("addr", "add", "fd53::1/64", "dev", "dns0", "nodad", netns=self.host)
        ip("addr", "add", "fd53::2/64", "dev", "dns0", "nodad", netns=self.upstream)
        ip("route", "add", "default", "via", "10.53.0.1", netns=self.upstream)
        ip("-6", "route", "add", "default", "via", "fd53::1", netns=self.upstream)
        env = {**os.environ, "PYTHONPATH": REPO}
        self.servers = [LabProcess([sys.executable, "-m", "tests.e2e.dns_upstream", address,
                                    "53", "=".join(EXTERNAL)],
                                   run_dir() / f"names-upstream-{address}.log", env,
                                   self.upstream).start() for address in NAMESERVERS]
        self.resolv_conf = tmp / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {NAMESERVERS[0]}\nnameserver {NAMESERVERS[2]}\n")
        self.agent = None
        self.inside = ThreadPoolExecutor(1, initializer=pyroute2_netns.setns,
                                         initargs=(self.container,))

    def start_agent(self):
        self.agent = LabProcess(
            [sys.executable, "-m", "tests.agent.names_agent", str(self.tmp),
             str(self.resolv_conf), "net1", *QUERIER, "=".join(NAMED)],
            run_dir() / "names-agent.log", {**os.environ, "PYTHONPATH": REPO}, self.host).start()
        assert wait_until(lambda: self.health().get("intercepted"), 10), self.agent.log_tail()

    def health(self):
        return responder_health(str(self.tmp / "names-health.json"))

    def table(self):
        return subprocess.run(["ip", "netns", "exec", self.host, "nft", "list", "tables"],
                              capture_output=True, text=True).stdout

    def ask(self, server, name, timeout=1.0, attempts=1, tcp=False, port=53):
        """(rcode, addresses) of `name`'s A records, asked of server:port
        from the container as a resolver would (`attempts` questions, each
        given `timeout` s); None when none was answered."""
        return self.inside.submit(lookup, server, name, timeout, attempts, tcp, port).result()

    def ask_from_upstream(self, server, name, port, tcp=False):
        """ask(), from the nameservers' namespace (not through a cali veth)."""
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns,
                                initargs=(self.upstream,)) as there:
            return there.submit(lookup, server, name, 0.5, 1, tcp, port).result()

    def close(self):
        if self.agent is not None and self.agent.running:
            os.kill(self.agent.pid, signal.SIGCONT)
            self.agent.stop()
        for server in self.servers:
            server.stop()
        self.inside.shutdown()


def lookup(server, name, timeout, attempts, tcp, port=53):
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    for _ in range(attempts):
        query = DNSRecord.question(name, "A")
        try:
            if tcp:
                with socket.create_connection((server, port), timeout=timeout) as s:
                    s.sendall(struct.pack("!H", len(query.pack())) + query.pack())
                    data = s.recv(65535)[2:]
            else:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(timeout)
                    s.sendto(query.pack(), (server, port))
                    data = s.recv(65535)
        except OSError:  # a timeout or a refusal: the next attempt
            continue
        reply = DNSRecord.parse(data)
        if reply.header.id == query.header.id:
            return reply.header.rcode, [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    return None
