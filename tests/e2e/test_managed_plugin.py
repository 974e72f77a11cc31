"""The plugin as users install it: a Docker managed plugin (v2).

In a lab Docker host (dockerd 20.10 or LAB_DOCKER's, etcd inside the host at
127.0.0.1:2379) the plugin is created from the session's build
(tests/e2e/managed_plugin.py), configured with `docker plugin set`, enabled,
and used as `calico:latest` for both drivers. Network type "host" puts it in
the lab host's network namespace, so it reaches that host's etcd and builds
veths where dockerd looks for them.
"""

import json
import os
import socket

import pytest

from tests.e2e.calico_host import WEP_PREFIX, docker, keys
from tests.e2e.managed_plugin import PLUGIN, call, create_plugin, enable_plugin, plugin_log
from tests.lab.common import netns_path, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

POOL = "192.170.0.0/16"


def remove_everything(host):
    """Containers, networks of the plugin, then the plugin itself."""
    ids = host.docker("ps", "-aq").stdout.split()
    if ids:
        host.docker("rm", "-f", *ids)
    for net in host.docker("network", "ls", "-q", "--filter", f"driver={PLUGIN}").stdout.split():
        host.docker("network", "rm", net)
    if host.docker("plugin", "inspect", PLUGIN).returncode == 0:
        host.docker("plugin", "disable", "-f", PLUGIN)
        host.docker("plugin", "rm", "-f", PLUGIN)


@pytest.fixture(scope="module")
def plugin(docker_host, plugin_build):
    """The managed plugin created, configured and enabled in the host;
    yields the host with .plugin_id set. Everything goes at the end."""
    host = docker_host
    host.plugin_id = None
    try:
        host.plugin_id = create_plugin(host, plugin_build)
        docker(host, "plugin", "set", PLUGIN,
               f"ETCD_ENDPOINTS={host.etcd.endpoints}",
               f"CALICO_IPV4POOL_CIDR={POOL}",
               # BIRD runs in the plugin (alone: no peers, nothing changes for routes).
               "CALICO_NETWORKING_BACKEND=bird",
               # The lab's dockerd does not listen on /var/run/docker.sock.
               f"docker-socket.source={host.dir / 'docker.sock'}")
        enable_plugin(host)
        yield host
    finally:
        remove_everything(host)


def run(host, name, network):
    result = host.docker("run", "-tid", "--net", network, "--name", name, "busybox")
    if result.returncode:
        hint = ""
        if "Read-only file system" in result.stderr:
            hint = ("\n(a managed plugin's /proc/sys is read-only: the plugin must write"
                    " sysctls under $CALICO_LIBNETWORK_PROC_SYS, /host/proc/sys in"
                    " config.json, where the proc-sys-net mount puts /proc/sys/net)")
        raise AssertionError(f"docker run {name} failed: {result.stderr.strip()}{hint}\n"
                             f"plugin log:\n{plugin_log(host, host.plugin_id)}")
    return result.stdout.strip()


def test_plugin_is_enabled_and_answers_on_its_socket(plugin):
    host = plugin
    assert docker(host, "plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN) == "true"
    config = json.loads(docker(host, "plugin", "inspect", "-f", "{{json .Config}}", PLUGIN))
    assert config["Interface"]["Socket"] == "calico.sock"
    assert config["Network"]["Type"] == "host"
    # CAP_NET_BIND_SERVICE: BIRD listens on TCP 179 (CALICO_NETWORKING_BACKEND=bird).
    assert config["Linux"]["Capabilities"] == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]
    status, caps = call(host, "calico.sock", "/NetworkDriver.GetCapabilities")
    assert (status, caps.get("Scope")) == (200, "local"), caps
    status, caps = call(host, "calico.sock", "/IpamDriver.GetCapabilities")
    assert status == 200 and "RequiresMACAddress" in caps, caps
    # The plugin created the default pool from CALICO_IPV4POOL_CIDR at start.
    pool = json.loads(host.etcd.get(
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"))
    assert pool["spec"]["cidr"] == POOL


def test_two_containers_on_a_calico_network_ping(plugin):
    host = plugin
    docker(host, "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "net1")
    try:
        run(host, "managed-a", "net1")
        run(host, "managed-b", "net1")
        ip_b = docker(host, "inspect", "-f",
                      '{{(index .NetworkSettings.Networks "net1").IPAddress}}', "managed-b")
        assert ip_b.startswith("192.170."), ip_b
        ping = host.docker("exec", "managed-a", "ping", "-c", "2", "-W", "2", "managed-b")
        assert ping.returncode == 0, ping.stdout + ping.stderr

        # Both workload endpoints are in etcd, under this host's hostname:
        # with network type host the plugin sees it (NODENAME is unset).
        node = socket.gethostname().strip().lower()
        endpoint = docker(host, "inspect", "-f",
                          '{{(index .NetworkSettings.Networks "net1").EndpointID}}', "managed-b")
        key = f"{WEP_PREFIX}{node.replace('-', '--')}-libnetwork-libnetwork-{endpoint}"
        assert len(keys(host, WEP_PREFIX)) == 2
        record = json.loads(host.etcd.get(key) or "null")
        assert record is not None, f"no {key} in {keys(host, WEP_PREFIX)}"
        assert record["spec"]["ipNetworks"] == [f"{ip_b}/32"]
        assert record["spec"]["node"] == node
        # The plugin wrote the cali interface's sysctls in the lab host.
        ifname = record["spec"]["interfaceName"]
        proxy_arp = host.run_in_netns(["cat", f"/proc/sys/net/ipv4/conf/{ifname}/proxy_arp"])
        assert proxy_arp.stdout.strip() == "1"

        docker(host, "rm", "-f", "managed-a", "managed-b")
        assert keys(host, WEP_PREFIX) == []
    finally:
        ids = host.docker("ps", "-aq").stdout.split()
        if ids:
            host.docker("rm", "-f", *ids)
        host.docker("network", "rm", "net1")
    assert keys(host, "/calico/libnetwork/v1/networks/") == []


def test_the_plugin_runs_bird_with_the_bird_backend(plugin):
    """The image's BIRD starts (its libraries are there) and binds the BGP
    port (CAP_NET_BIND_SERVICE) in the host's network namespace."""
    host = plugin
    netns = os.stat(netns_path(host.netns)).st_ino

    def bird_in_host():
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = open(f"/proc/{pid}/cmdline").read().split("\0")
                if (os.path.basename(argv[0]) == "bird" and "-c" in argv
                        and argv[argv.index("-c") + 1].endswith("/bird/bird.cfg")
                        and os.stat(f"/proc/{pid}/ns/net").st_ino == netns):
                    return True
            except (OSError, IndexError):
                continue
        return False

    assert wait_until(bird_in_host, 30), plugin_log(host, host.plugin_id)
    # A peer that never answers: BIRD listens once it has a BGP protocol.
    host.etcd.put("/calico/resources/v3/projectcalico.org/bgppeers/nobody", json.dumps(
        {"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3",
         "metadata": {"name": "nobody"}, "spec": {"peerIP": "10.1.0.254", "asNumber": 65000}}))
    assert wait_until(lambda: host.run_in_netns(["ss", "-Hltn", "sport = :179"]).stdout.strip(),
                      20), plugin_log(host, host.plugin_id)
