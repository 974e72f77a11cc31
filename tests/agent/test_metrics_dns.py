"""The responder's DNS metrics over the wire: each question counted once,
by how it was answered (local, forwarded, servfail), with its latency; and
its health as the names watchdog sees it."""

import os

import pytest
from prometheus_client import CollectorRegistry

from agent.metrics import ResponderHealth
from agent.status_file import write_status
from agent.names.responder import Listener, Responder
from metrics import instruments
from tests.agent.test_names import (WEP_PREFIX, FakeUpstream, answers, ask, guide_index,
                                    udp_ask, wep)
from tests.introspect import feed

METRIC = "calico_libnetwork_dns_answer_duration_seconds"
ANSWERING = "calico_libnetwork_dns_responder_answering"
WITHDRAWALS = "calico_libnetwork_dns_interception_withdrawals_total"


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    instruments.enable_agent(registry)
    yield registry
    instruments.disable()


def count(registry, answer):
    return registry.get_sample_value(METRIC + "_count", {"answer": answer})


def test_questions_counted_by_answer(registry):
    index = guide_index()
    feed(index, WEP_PREFIX + "libnetwork/q", wep("q", "h1", "net1", ["querier"],
                                             ["127.0.0.1/32"]))
    index.batch_done(True, False)
    working, silent = FakeUpstream(), FakeUpstream("silent")
    listeners = [Listener("127.0.0.1", 0, (("127.0.0.1", working.port),)).bind(),
                 Listener("127.0.0.1", 0, (("127.0.0.1", silent.port),)).bind()]
    responder = Responder(lambda: index.table, forward_timeout=0.3).start(listeners)
    try:
        to_working, to_silent = (listener.port for listener in listeners)
        assert answers(udp_ask(to_working, ask("workload-e")))[1]  # a name of net1: ours
        assert answers(udp_ask(to_working, ask("workload-e.net1")))[1]
        assert answers(udp_ask(to_working, ask("external.example")))[1] == ["192.0.2.1"]
        udp_ask(to_silent, ask("slow.example"))  # SERVFAIL after 0.3 s
        assert (count(registry, "local"), count(registry, "forwarded"),
                count(registry, "servfail")) == (2, 1, 1)
        # the servfail waited for the upstream; a local answer waits for nothing
        assert registry.get_sample_value(METRIC + "_sum", {"answer": "servfail"}) >= 0.3
        assert registry.get_sample_value(METRIC + "_bucket",
                                         {"answer": "local", "le": "1.0"}) == 2
    finally:
        responder.stop()
        working.close()
        silent.close()


def test_the_responders_health_as_the_watchdog_wrote_it(tmp_path):
    """Answering 1 or 0 and the withdrawals, from the watchdog's file (its
    watchdog, here this process, alive); nothing without a watchdog."""
    path = tmp_path / "names-health-h1.json"
    registry = CollectorRegistry()
    registry.register(ResponderHealth(str(path)))
    assert registry.get_sample_value(ANSWERING) is None
    write_status(str(path), {"answering": False, "since": 1, "intercepted": [],
                             "withdrawals": 2, "pid": os.getpid()})
    assert registry.get_sample_value(ANSWERING) == 0
    assert registry.get_sample_value(WITHDRAWALS) == 2
    write_status(str(path), {"answering": True, "since": 2, "intercepted": ["10.0.0.2"],
                             "withdrawals": 2, "pid": os.getpid()})
    assert registry.get_sample_value(ANSWERING) == 1
