"""`calico-libnetwork run` with CALICO_LIBNETWORK_PROMETHEUS_PORT: one
/metrics answer on the node for the plugin's gunicorn worker and the agent,
read from the node's own namespace, with the values the calls made; a bad
or taken port stops the start naming the variable."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.test_cli_run import (agent_children, environment, host,  # noqa: F401
                                    run_argv, wait_for_sockets)
from tests.lab.common import in_netns, wait_until
from tests.scrape import value

pytestmark = pytest.mark.require_root
PORT = 9099
VARIABLE = "CALICO_LIBNETWORK_PROMETHEUS_PORT"
SCRAPE = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
          "sys.argv[1], timeout=float(sys.argv[2])).read().decode())")


def scrape_in(netns, path="/metrics", timeout=10) -> dict:
    """The node's metrics as its own namespace sees them on 127.0.0.1."""
    text = subprocess.run(in_netns([sys.executable, "-c", SCRAPE,
                                    f"http://127.0.0.1:{PORT}{path}", str(timeout)], netns),
                          capture_output=True, text=True, timeout=timeout + 20,
                          check=True).stdout
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "a family appears twice"
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def call(sock_path, name, body) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(f"POST /{name} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n"
                  "Connection: close\r\n\r\n".encode() + data)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("raw", ["http", "0", "65536", "-1", "9099x"])
def test_a_bad_port_stops_the_start(tmp_path, raw):
    result = subprocess.run(run_argv(tmp_path), env=environment(**{VARIABLE: raw}),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"configuration error: {VARIABLE}: {raw!r} is not a TCP port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_taken_port_stops_the_start(tmp_path, host):  # noqa: F811
    netns, etcd = host
    holder = subprocess.Popen(in_netns([sys.executable, "-c",
                                        "import socket, time; s = socket.create_server(('', "
                                        f"{PORT})); print('bound', flush=True); time.sleep(60)"],
                                       netns), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "bound\n"
        result = subprocess.run(run_argv(tmp_path / "plugins", netns),
                                env=environment(ETCD_ENDPOINTS=etcd.endpoints,
                                                CALICO_LIBNETWORK_RUN_DIR=str(tmp_path / "run"),
                                                **{VARIABLE: str(PORT)}),
                                capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert f"{VARIABLE}: cannot listen on port {PORT} (Address already in use)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # stopped before it touched anything


def test_one_port_serves_the_plugin_and_the_agent(tmp_path, host):  # noqa: F811
    netns, etcd = host
    etcd.ctl("del", "--prefix", "/calico/ipam/")
    plugins = tmp_path / "plugins"
    env = environment(ETCD_ENDPOINTS=etcd.endpoints, NODENAME="metrics-test",
                      CALICO_LIBNETWORK_RUN_DIR=str(tmp_path / "run"), **{VARIABLE: str(PORT)})
    process = subprocess.Popen(run_argv(plugins, netns), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        ipam = plugins / "calico-ipam.sock"
        wait_for_sockets([plugins / "calico.sock", ipam], process, timeout=90)
        for _ in range(3):
            assert call(ipam, "IpamDriver.GetCapabilities", {})[0] == 200
        status, pool = call(ipam, "IpamDriver.RequestPool",
                            {"AddressSpace": "CalicoGlobalAddressSpace", "Pool": "",
                             "SubPool": "", "Options": {}, "V6": False})
        assert status == 200, pool
        for _ in range(2):
            assert call(ipam, "IpamDriver.RequestAddress",
                        {"PoolID": pool["PoolID"], "Address": "", "Options": {}})[0] == 200
        status, _ = call(ipam, "IpamDriver.RequestAddress",  # a pool id no pool has
                         {"PoolID": "CalicoPoolNone", "Address": "", "Options": {}})
        assert status != 200
        assert call(ipam, "NetworkDriver.Frobnicate", {})[0] == 404  # not counted

        def looks_right(s):
            def calls(name):
                return value(s, "calico_libnetwork_call_duration_seconds_count", call=name)
            return (calls("IpamDriver.GetCapabilities") == 3
                    and calls("IpamDriver.RequestAddress") == 3
                    and value(s, "calico_libnetwork_call_errors_total",
                              call="IpamDriver.RequestAddress") == 1
                    and value(s, "calico_libnetwork_call_errors_total",
                              call="IpamDriver.GetCapabilities") == 0
                    and calls("NetworkDriver.Join") == 0
                    and not any("Frobnicate" in str(k) for k in s)
                    # the worker's etcd and the agent's, told apart
                    and value(s, "calico_libnetwork_etcd_requests_total",
                              component="plugin", op="txn") >= 2
                    and value(s, "calico_libnetwork_etcd_requests_total",
                              component="agent", op="watch") >= 1
                    # the agent's view: its Node, the two addresses in its block
                    and value(s, "felix_cluster_num_hosts") == 1
                    and value(s, "felix_cluster_num_workload_endpoints") == 0
                    and value(s, "ipam_allocations_in_use", ippool="default-ipv4-ippool",
                              node="metrics-test") == 2
                    and value(s, "ipam_blocks", ippool="default-ipv4-ippool",
                              node="metrics-test") == 1
                    and value(s, "felix_resyncs_started") >= 1
                    and value(s, "process_open_fds") > 0)
        scrape_in(netns, timeout=90)  # the agent serving: it takes its time on a busy machine
        assert wait_until(lambda: looks_right(scrape_in(netns)), 30), scrape_in(netns)
        buckets = scrape_in(netns)
        assert value(buckets, "calico_libnetwork_call_duration_seconds_bucket",
                     call="IpamDriver.GetCapabilities", le="30.0") == 3
        with pytest.raises(subprocess.CalledProcessError):
            scrape_in(netns, "/")  # only /metrics, as Felix

        # The agent killed: `run` holds the port meanwhile, and a scrape made
        # at once is answered by the agent it starts again.
        os.kill(int(agent_children(process)[0]), signal.SIGKILL)
        again = scrape_in(netns, timeout=90)
        assert value(again, "calico_libnetwork_call_duration_seconds_count",
                     call="IpamDriver.GetCapabilities") == 3
        assert wait_until(lambda: value(scrape_in(netns), "felix_cluster_num_hosts") == 1, 20)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "Traceback" not in out, out


def test_unset_nothing_listens(tmp_path, host):  # noqa: F811
    netns, etcd = host
    plugins = tmp_path / "plugins"
    process = subprocess.Popen(run_argv(plugins, netns),
                               env=environment(ETCD_ENDPOINTS=etcd.endpoints,
                                               CALICO_LIBNETWORK_RUN_DIR=str(tmp_path / "run")),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_sockets([plugins / "calico.sock"], process, timeout=90)
        # the agent up: it wrote its policy status after its first sync
        assert wait_until(lambda: list((tmp_path / "run").glob("policy-*.json")), 90)
        listening = subprocess.run(in_netns(["ss", "-Htln"], netns), capture_output=True,
                                   text=True, check=True).stdout
        assert f":{PORT} " not in listening, listening
        assert not list((tmp_path / "run").glob("metrics-*"))
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_without_the_agent_run_serves_the_plugin_figures_itself(tmp_path, host):  # noqa: F811
    netns, etcd = host
    plugins = tmp_path / "plugins"
    env = environment(ETCD_ENDPOINTS=etcd.endpoints, NODENAME="metrics-no-agent",
                      CALICO_LIBNETWORK_RUN_DIR=str(tmp_path / "run"), **{VARIABLE: str(PORT)})
    process = subprocess.Popen(run_argv(plugins, netns) + ["--no-agent"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ipam = plugins / "calico-ipam.sock"
        wait_for_sockets([plugins / "calico.sock", ipam], process, timeout=90)
        assert call(ipam, "IpamDriver.GetDefaultAddressSpaces", {})[0] == 200
        s = scrape_in(netns)
        assert value(s, "calico_libnetwork_call_duration_seconds_count",
                     call="IpamDriver.GetDefaultAddressSpaces") == 1
        assert value(s, "process_open_fds") > 0  # run's own
        assert not any(name.startswith(("felix_", "ipam_")) for name, _ in s)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "Traceback" not in out, out
