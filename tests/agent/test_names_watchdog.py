"""Names must never make DNS worse than without us, in lab namespaces: a
host running the agent's name service (tests/agent/names_agent.py, its
watchdog a child process), a container wired as Calico wires one (IPv4 and
IPv6), and the host's nameservers in a namespace of their own.

    container eth0 10.65.0.2, fd65::2 -- cali0 (169.254.1.1, fe80::1) host
    host dns0 10.53.0.1/24, fd53::1/64 -- upstream 10.53.0.2, .3, fd53::2

The container asks the nameservers directly, as dockerd up to 27 does from
inside it.  Behaviours, not speeds: with the agent frozen (SIGSTOP) a
question asked with a resolver's 1 s timeout is answered by the nameserver.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from pyroute2 import netns as pyroute2_netns

from agent.names.health import responder_health
from tests.lab import Lab, LabProcess
from tests.lab.common import ip, run_dir, wait_until

pytestmark = pytest.mark.require_root

REPO = str(__import__("pathlib").Path(__file__).resolve().parents[2])
QUERIER = ("10.65.0.2", "fd65::2")
NAMED = ("workload-e", "10.65.1.5")  # a container of another host, net1
EXTERNAL = ("external.example", "10.99.0.7")  # what every nameserver answers
NAMESERVERS = ("10.53.0.2", "10.53.0.3", "fd53::2")


class Site:
    def __init__(self, lab, tmp):
        self.lab, self.tmp = lab, tmp
        self.host = lab.netns("names-host")
        self.upstream = lab.netns("names-up")
        self.container = lab.netns("names-wl")
        for ns in (self.host, self.upstream):
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                            "net.ipv6.conf.all.forwarding=1"], check=True)
        lab.veth(self.host, "cali0", self.container, "eth0")
        ip("addr", "add", "169.254.1.1/32", "scope", "host", "dev", "cali0", netns=self.host)
        ip("addr", "add", "fe80::1/64", "dev", "cali0", "nodad", netns=self.host)
        ip("route", "add", f"{QUERIER[0]}/32", "dev", "cali0", netns=self.host)
        ip("route", "add", f"{QUERIER[1]}/128", "dev", "cali0", netns=self.host)
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

    def ask(self, server, name, timeout=1.0, attempts=1, tcp=False):
        """(rcode, addresses) of `name`'s A records, asked of server:53 from
        the container as a resolver would (`attempts` questions, each given
        `timeout` s); None when none was answered."""
        return self.inside.submit(lookup, server, name, timeout, attempts, tcp).result()

    def close(self):
        if self.agent is not None and self.agent.running:
            os.kill(self.agent.pid, signal.SIGCONT)
            self.agent.stop()
        for server in self.servers:
            server.stop()
        self.inside.shutdown()


def lookup(server, name, timeout, attempts, tcp):
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    for _ in range(attempts):
        query = DNSRecord.question(name, "A")
        try:
            if tcp:
                with socket.create_connection((server, 53), timeout=timeout) as s:
                    s.sendall(struct.pack("!H", len(query.pack())) + query.pack())
                    data = s.recv(65535)[2:]
            else:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(timeout)
                    s.sendto(query.pack(), (server, 53))
                    data = s.recv(65535)
        except OSError:  # a timeout or a refusal: the next attempt
            continue
        reply = DNSRecord.parse(data)
        if reply.header.id == query.header.id:
            return reply.header.rcode, [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    return None


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with Lab() as lab:
        made = Site(lab, tmp_path_factory.mktemp("names-watchdog"))
        try:
            made.start_agent()
            yield made
        finally:
            made.close()


def answered_by_the_responder(site, server, tcp=False):
    return site.ask(server, NAMED[0], tcp=tcp) == (RCODE.NOERROR, [NAMED[1]])


def test_questions_to_ipv4_and_ipv6_nameservers_are_intercepted(site):
    """The nameservers do not know workload-e: only the responder answers it."""
    for server in (NAMESERVERS[0], NAMESERVERS[2]):
        assert wait_until(lambda s=server: answered_by_the_responder(site, s), 5), \
            site.agent.log_tail()
        assert answered_by_the_responder(site, server, tcp=True)
        assert site.ask(server, EXTERNAL[0]) == (RCODE.NOERROR, [EXTERNAL[1]])
    health = site.health()
    assert health["answering"] is True and health["intercepted"] == ["10.53.0.2", "fd53::2"]


def test_a_frozen_responder_is_bypassed_and_back_when_it_answers(site):
    assert wait_until(lambda: answered_by_the_responder(site, NAMESERVERS[0]), 5)
    os.kill(site.agent.pid, signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        # A question asked at the freeze: its first 1 s attempt may be lost to
        # the frozen responder, the second is the nameserver's.
        assert site.ask(NAMESERVERS[0], EXTERNAL[0], attempts=2) == \
            (RCODE.NOERROR, [EXTERNAL[1]]), site.table()
        print(f"answered by the nameserver {time.monotonic() - frozen:.2f} s after SIGSTOP")
        # From then on, one attempt of 1 s does, on every nameserver and over TCP.
        for server in (NAMESERVERS[0], NAMESERVERS[2]):
            assert site.ask(server, EXTERNAL[0]) == (RCODE.NOERROR, [EXTERNAL[1]])
            assert site.ask(server, EXTERNAL[0], tcp=True) == (RCODE.NOERROR, [EXTERNAL[1]])
            # Another host's container: the nameserver's own answer, at once.
            assert site.ask(server, NAMED[0]) == (RCODE.NXDOMAIN, [])
        # Asked of 169.254.1.1 itself (daemon.json `dns` on dockerd 28 and
        # later): its first upstream answers.
        assert site.ask("169.254.1.1", EXTERNAL[0]) == (RCODE.NOERROR, [EXTERNAL[1]])
        health = site.health()
        assert health["answering"] is False and health["intercepted"] == []
        assert health["withdrawals"] == 1
    finally:
        os.kill(site.agent.pid, signal.SIGCONT)
    assert wait_until(lambda: answered_by_the_responder(site, NAMESERVERS[0]), 5), \
        site.agent.log_tail()
    assert answered_by_the_responder(site, NAMESERVERS[2])
    assert site.health()["answering"] is True
    assert "has not answered" in site.agent.log_tail() and "answers again" in \
        site.agent.log_tail()


def test_a_change_of_resolv_conf_is_followed_without_restart(site):
    pid = site.agent.pid
    saved = site.resolv_conf.read_text()
    site.resolv_conf.write_text(f"nameserver {NAMESERVERS[1]}\n")  # .2 and fd53::2 gone
    try:
        assert wait_until(lambda: answered_by_the_responder(site, NAMESERVERS[1]), 5), \
            site.agent.log_tail()
        assert wait_until(lambda: site.health()["intercepted"] == [NAMESERVERS[1]], 5)
        # The ones gone are asked directly again.
        assert site.ask(NAMESERVERS[0], NAMED[0]) == (RCODE.NXDOMAIN, [])
        assert site.ask(NAMESERVERS[2], NAMED[0]) == (RCODE.NXDOMAIN, [])
        assert site.ask(NAMESERVERS[0], EXTERNAL[0]) == (RCODE.NOERROR, [EXTERNAL[1]])
    finally:
        site.resolv_conf.write_text(saved)
    assert wait_until(lambda: answered_by_the_responder(site, NAMESERVERS[2]), 5)
    assert site.agent.pid == pid and site.agent.running


def test_a_dead_watchdog_is_replaced(site):
    watchdog = site.health()["pid"]
    os.kill(watchdog, signal.SIGKILL)  # the kernel drops its table
    assert wait_until(lambda: site.health().get("pid") not in (None, watchdog)
                      and site.health()["intercepted"], 5), site.agent.log_tail()
    assert answered_by_the_responder(site, NAMESERVERS[0])


def test_the_table_goes_with_the_agent(site):
    """Last: kill -9 of the agent ends its watchdog (the end of its stdin),
    and with it the table."""
    assert "calico-libnetwork-dns" in site.table()
    os.kill(site.agent.pid, signal.SIGKILL)
    assert wait_until(lambda: "calico-libnetwork-dns" not in site.table(), 2, 0.02)
    assert site.ask(NAMESERVERS[0], NAMED[0]) == (RCODE.NXDOMAIN, [])
    assert wait_until(lambda: site.health()["answering"] is None, 2)  # its last moments
