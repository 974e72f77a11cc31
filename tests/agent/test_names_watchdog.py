"""Names must never make DNS worse than without us, in the lab site of
tests/agent/names_site.py (real namespaces, veths, nftables).  The
container asks the nameservers directly, as dockerd up to 27 does from
inside it.  Behaviours, not speeds: with the agent frozen (SIGSTOP) a
question asked with a resolver's 1 s timeout is answered by the nameserver.
"""

import hashlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dnslib import RCODE
from pyroute2 import netns as pyroute2_netns

from agent.policy.engine import PolicyEngine, remove_policy
from driver.endpoints import host_ifname, network_profile, workload_endpoint

from tests.agent.names_site import EXTERNAL, NAMED, NAMESERVERS, QUERIER, Site
from tests.introspect import feed
from tests.lab import Lab
from tests.lab.common import wait_until

pytestmark = pytest.mark.require_root


QUERIER_ENDPOINT = hashlib.sha256(b"querier").hexdigest()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with Lab() as lab:
        made = Site(lab, tmp_path_factory.mktemp("names-watchdog"),
                    host_ifname(QUERIER_ENDPOINT))
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


def test_the_ipv6_listeners_answer_only_intercepted_questions(site):
    """They listen on "::": asked directly, from elsewhere than a cali veth,
    they say nothing."""
    listening = json.loads((site.tmp / "names.json").read_text())["listening"]
    port = next(int(where.rpartition(":")[2]) for where in listening if where.startswith("["))
    assert answered_by_the_responder(site, NAMESERVERS[2])
    for tcp in (False, True):
        assert site.ask_from_upstream("fd53::1", EXTERNAL[0], port, tcp) is None


def test_intercepted_questions_pass_the_policy_whatever_the_endpoint_to_host_action(site):
    """With policy on and Felix's default (workloads' new connections to
    their host dropped), DNS redirected to the responder is accepted, on
    169.254.1.1 and on fe80::1 alike."""
    endpoint = workload_endpoint("h1", QUERIER_ENDPOINT, "n" * 64,
                                 [f"{QUERIER[0]}/32", f"{QUERIER[1]}/128"],
                                 "ee:ee:ee:ee:ee:ee", ["net1"])
    with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns,
                            initargs=(site.host,)) as inside:
        def apply(engine, *records):
            for key, value in records:
                feed(engine, key, value)
            engine.batch_done(True, False)
            return engine
        engine = inside.submit(apply, PolicyEngine("h1", str(site.tmp / "policy.json")),
                               (network_profile("net1").key,
                                network_profile("net1").to_json().encode()),
                               (endpoint.key, endpoint.to_json().encode())).result()
        try:
            assert engine.felix("default_endpoint_to_host_action")[0] == "Drop"
            for server in (NAMESERVERS[0], NAMESERVERS[2]):
                assert answered_by_the_responder(site, server)
                assert answered_by_the_responder(site, server, tcp=True)
        finally:
            inside.submit(engine.stop).result()
            inside.submit(remove_policy).result()


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
        # Every nameserver, UDP and TCP, as a resolver asks (2 attempts of 1 s,
        # glibc's default count; dockerd alone would wait 4 s for the responder).
        for server in (NAMESERVERS[0], NAMESERVERS[2]):
            for tcp in (False, True):
                assert site.ask(server, EXTERNAL[0], attempts=2, tcp=tcp) == \
                    (RCODE.NOERROR, [EXTERNAL[1]])
            # Another host's container: the nameserver's own answer.
            assert site.ask(server, NAMED[0], attempts=2) == (RCODE.NXDOMAIN, [])
        # Asked of 169.254.1.1 itself (daemon.json `dns` on dockerd 28 and
        # later): its first upstream answers.
        assert site.ask("169.254.1.1", EXTERNAL[0], attempts=2) == \
            (RCODE.NOERROR, [EXTERNAL[1]])
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
    """A nameserver added is intercepted at once; the ones removed stay
    intercepted, since containers started before keep asking them."""
    pid = site.agent.pid
    saved = site.resolv_conf.read_text()
    assert site.ask(NAMESERVERS[1], NAMED[0]) == (RCODE.NXDOMAIN, [])  # not intercepted yet
    site.resolv_conf.write_text(f"nameserver {NAMESERVERS[1]}\n")  # .2 and fd53::2 removed
    try:
        assert wait_until(lambda: answered_by_the_responder(site, NAMESERVERS[1]), 5), \
            site.agent.log_tail()
        assert site.ask(NAMESERVERS[1], EXTERNAL[0]) == (RCODE.NOERROR, [EXTERNAL[1]])
        assert site.health()["intercepted"] == sorted(NAMESERVERS)
        for server in (NAMESERVERS[0], NAMESERVERS[2]):
            assert answered_by_the_responder(site, server)
        assert "the host's nameservers are now 10.53.0.3" in site.agent.log_tail()
    finally:
        site.resolv_conf.write_text(saved)
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
