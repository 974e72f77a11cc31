"""What the plugin's request path, the etcd client and the agent count.

Every function here is a no-op until enable_plugin() or enable_agent():
with CALICO_LIBNETWORK_PROMETHEUS_PORT unset nothing is created and an
event costs one test of a global.  Each process enables its own: a gunicorn
worker writes prometheus_client's multiprocess files (the agent, which
serves the port, reads them), the agent counts in its own registry.
"""

import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, values

from metrics.summary import QuantileSummary

# dockerd abandons a plugin call after 30 s: no bucket beyond it.
CALL_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)
# Docker's embedded resolver waits 4 s for an upstream; ours forwards for 3.5 s at most.
DNS_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 4)
ETCD_OPS = ("get", "range", "txn", "put", "watch")
RETRY_REASONS = ("unavailable", "conflict")
DNS_ANSWERS = ("local", "forwarded", "servfail")


class _Instruments:
    def __init__(self, component: str, registry: CollectorRegistry | None):
        requests = Counter("calico_libnetwork_etcd_requests",
                           "etcd round trips (each attempt on an endpoint counts)",
                           ["component", "op"], registry=registry)
        retries = Counter("calico_libnetwork_etcd_retries",
                          "etcd requests made again: after an endpoint did not answer "
                          "(unavailable) or after a compare-and-swap lost (conflict)",
                          ["component", "reason"], registry=registry)
        # Label children made once: the series exist at 0, and counting is a dict lookup.
        self.etcd_requests = {op: requests.labels(component, op) for op in ETCD_OPS}
        self.etcd_retries = {reason: retries.labels(component, reason)
                             for reason in RETRY_REASONS}
        self.calls = {}
        self.call_errors = {}
        self.apply_time = None
        self.dns = {}


_on: _Instruments | None = None


def enable_plugin(directory: str, calls) -> None:
    """In a gunicorn worker, after fork: count `calls` (Docker's call names)
    and etcd round trips into prometheus_client's multiprocess files in
    `directory`.  The value class is chosen here, not by the variable at
    import: this process imported prometheus_client before it knew the
    directory, and the agent (started from the same environment) must not
    use multiprocess mode."""
    global _on
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()
    on = _Instruments("plugin", None)
    duration = Histogram("calico_libnetwork_call_duration_seconds",
                         "seconds the plugin took to answer a Docker call", ["call"],
                         buckets=CALL_BUCKETS, registry=None)
    errors = Counter("calico_libnetwork_call_errors",
                     "Docker calls answered with an error", ["call"], registry=None)
    on.calls = {call: duration.labels(call) for call in calls}
    on.call_errors = {call: errors.labels(call) for call in calls}
    _on = on


def enable_agent(registry: CollectorRegistry) -> None:
    """In the agent: count into `registry`, which the agent serves."""
    global _on
    on = _Instruments("agent", registry)
    on.apply_time = QuantileSummary(
        "felix_int_dataplane_apply_time_seconds",
        "seconds per policy programming (nftables) after the agent's first")
    registry.register(on.apply_time)
    answers = Histogram("calico_libnetwork_dns_answer_duration_seconds",
                        "seconds from a container's DNS question to the reply, by how it was "
                        "answered", ["answer"], buckets=DNS_BUCKETS, registry=registry)
    on.dns = {answer: answers.labels(answer) for answer in DNS_ANSWERS}
    _on = on


def disable() -> None:
    """Back to no-ops (tests)."""
    global _on
    _on = None


def call_answered(call: str, started: float, failed: bool) -> None:
    """A Docker call answered; `started`: its time.monotonic() on arrival.
    Calls the plugin does not implement are not counted: their names are
    whatever a client sent."""
    if _on is None or call not in _on.calls:
        return
    _on.calls[call].observe(time.monotonic() - started)
    if failed:
        _on.call_errors[call].inc()


def etcd_request(op: str) -> None:
    if _on is not None:
        _on.etcd_requests[op].inc()


def etcd_retry(reason: str) -> None:
    if _on is not None:
        _on.etcd_retries[reason].inc()


def dataplane_applied(seconds: float) -> None:
    if _on is not None and _on.apply_time is not None:
        _on.apply_time.observe(seconds)


def dns_answered(answer: str, started: float) -> None:
    if _on is not None and _on.dns:
        _on.dns[answer].observe(time.monotonic() - started)
