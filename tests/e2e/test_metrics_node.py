"""End to end: a Docker host whose plugin runs with
CALICO_LIBNETWORK_PROMETHEUS_PORT, a few busybox containers, and the
node's /metrics read from the host as Prometheus would: values that match
what dockerd asked and what etcd holds, from the plugin's worker and the
node agent on one port.  Not on the engine matrix: nothing here depends
on dockerd's version beyond the calls every engine makes."""

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.calico_host import CALICO, docker, in_host, remove_all, start_plugin, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.require_root]
PORT = 9099
SCRAPE = ("import sys, urllib.request; "
          "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())")
POOL = "default-ipv4-ippool"


@pytest.fixture(scope="module")
def host(docker_host):
    docker_host.plugin = start_plugin(docker_host, CALICO_LIBNETWORK_PROMETHEUS_PORT=str(PORT))
    yield docker_host
    remove_all(docker_host)


def scrape(host) -> dict:
    text = in_host(host, [sys.executable, "-c", SCRAPE, f"http://127.0.0.1:{PORT}/metrics"])
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def calls(samples, call):
    return value(samples, "calico_libnetwork_call_duration_seconds_count", call=call)


def agent_in_sync(host) -> bool:
    try:
        s = scrape(host)
    except Exception:  # noqa: BLE001 - the agent is not serving yet
        return False
    return value(s, "felix_cluster_num_hosts") == 1


def test_the_node_metrics_count_containers_calls_and_addresses(host):
    wait_for(lambda: agent_in_sync(host), 90, "the agent's first snapshot")
    docker(host, "network", "create", *CALICO, "net1")
    for name in ("m1", "m2", "m3"):
        docker(host, "run", "-tid", "--net", "net1", "--name", name, "busybox")
    # A question for a container's name to the agent's responder: answered locally.
    assert "Address" in docker(host, "exec", "m1", "nslookup", "m2", "169.254.1.1")

    def expected(containers):
        def check():
            s = scrape(host)
            return (value(s, "felix_active_local_endpoints") == containers
                    and value(s, "felix_cluster_num_workload_endpoints") == containers
                    and value(s, "felix_cluster_num_hosts") == 1
                    and value(s, "ipam_allocations_in_use", ippool=POOL,
                              node=host.name) == containers
                    and value(s, "ipam_allocations_borrowed", ippool=POOL, node=host.name) == 0
                    and value(s, "ipam_blocks", ippool=POOL, node=host.name) == 1
                    and calls(s, "NetworkDriver.CreateEndpoint") == 3
                    and calls(s, "NetworkDriver.Join") == 3
                    and calls(s, "NetworkDriver.Leave") == 3 - containers
                    and calls(s, "NetworkDriver.DeleteEndpoint") == 3 - containers
                    and value(s, "calico_libnetwork_call_errors_total",
                              call="NetworkDriver.Join") == 0)
        return check

    wait_for(expected(3), 30, f"metrics of 3 containers: {scrape(host)}")
    s = scrape(host)
    assert value(s, "calico_libnetwork_dns_answer_duration_seconds_count", answer="local") >= 1
    assert value(s, "felix_int_dataplane_apply_time_seconds_count") >= 1
    assert value(s, "felix_int_dataplane_apply_time_seconds", quantile="0.99") < 10
    assert value(s, "calico_libnetwork_etcd_requests_total", component="plugin",
                 op="txn") >= 6  # at least an address and an endpoint per container
    assert value(s, "felix_resyncs_started") == 1

    # A container does not reach the port on its gateway (the host): policy drops it.
    assert host.docker("exec", "m1", "wget", "-q", "-T", "3", "-O-",
                       f"http://169.254.1.1:{PORT}/metrics").returncode != 0
    assert in_host(host, [sys.executable, "-c", SCRAPE, f"http://169.254.1.1:{PORT}/metrics"])

    docker(host, "rm", "-f", "m3")
    wait_for(expected(2), 30, f"metrics of 2 containers: {scrape(host)}")
