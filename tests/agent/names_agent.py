"""The agent's name service alone, for tests/agent/test_names_watchdog.py:
run in a lab namespace as `python -m tests.agent.names_agent RUN_DIR
RESOLV_CONF NETWORK QUERIER_V4 QUERIER_V6 NAME=V4`, it answers NAME in NETWORK
to the querier (an index fed as the follower would), forwards the rest to
RESOLV_CONF's nameservers (port 53), and runs until SIGTERM; its watchdog
is a child process, as under the agent."""

import json
import logging
import signal
import sys
import threading

from agent.names.service import NameService
from datastore.records import WORKLOAD_ENDPOINTS
from tests.introspect import feed


def endpoint(name: str, network: str, addresses: list[str]) -> bytes:
    return json.dumps({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": name, "namespace": "libnetwork", "annotations": {
            "libnetwork.projectcalico.org/network-name": network,
            "libnetwork.projectcalico.org/dns-names": json.dumps([name])}},
        "spec": {"node": "h1", "ipNetworks": [f"{a}/{128 if ':' in a else 32}"
                                               for a in addresses],
                 "profiles": [network]}}).encode()


def main():
    run_dir, resolv_conf, network, querier4, querier6, named = sys.argv[1:7]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    name, address = named.split("=")
    service = NameService(f"{run_dir}/names.json", f"{run_dir}/names-health.json",
                          resolv_conf=resolv_conf, daemon_json=f"{run_dir}/daemon.json")
    feed(service.index, WORKLOAD_ENDPOINTS.prefix + "libnetwork/querier",
         endpoint("querier", network, [querier4, querier6]))
    feed(service.index, WORKLOAD_ENDPOINTS.prefix + "libnetwork/" + name,
         endpoint(name, network, [address]))
    service.index.batch_done(True, True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    service.start()
    print("ready", flush=True)
    stop.wait()
    service.stop()


if __name__ == "__main__":
    main()
