"""Published ports (`docker run -p`) on Calico networks, on two lab hosts
sharing one etcd (on h1): h1's dockerd runs docker-proxy (the default),
h2's `"userland-proxy": false`.

    h1 eth1 10.0.31.1 <----> h2 eth1 10.0.31.2

The published port answers from the other host, from the host itself (on
127.0.0.1 too), from containers of another network on each host and from
the publishing container itself (hairpin), with the client's address where
Docker's bridge shows it; 127.0.0.1-only bindings, ranges, UDP, `-P` and
IPv6 (`-p [::]:...`); a taken host port is refused; the bindings follow the
running containers through stop, start, rm, a plugin killed with SIGKILL and
a dockerd restart; Compose `ports:`."""

import json
import sys
import types

import pytest

from datastore.annotations import PUBLISHED_PORTS
from tests.e2e import reach
from tests.e2e.calico_host import (CALICO, WEP_PREFIX, Project, docker, docker_fails,
                                   endpoint_id, in_host, keys, start_plugin, wait, wep)
from tests.lab import EtcdServer, LabProcess
from tests.lab.common import ip, run_dir, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

ADDRESSES = {"h1": "10.0.31.1", "h2": "10.0.31.2"}
ADDRESSES6 = {"h1": "fd00:31::1", "h2": "fd00:31::2"}
PORTS_TABLE = ("inet", "calico-libnetwork-ports")
PEER = """
import socket
s = socket.socket(socket.{family}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
{v6only}
s.bind(({address!r}, {port})); s.listen()
print("ready", flush=True)
while True:
    c, peer = s.accept(); print(peer[0], flush=True); c.close()
"""

# The lab's busybox image is local (there is no registry): never pull it.
COMPOSE = """\
services:
  web:
    image: busybox:latest
    pull_policy: never
    command: ["sleep", "3600"]
    ports: ["8600:80"]
    networks: [front]
networks:
  front:
    driver: calico
    ipam:
      driver: calico-ipam
"""


@pytest.fixture(scope="module")
def pair(docker_host_factory):
    lab = docker_host_factory.lab
    h1 = docker_host_factory(etcd=False)
    h2 = docker_host_factory(etcd=False, daemon_config={"userland-proxy": False})
    lab.veth(h1.netns, "eth1", h2.netns, "eth1", f"{ADDRESSES['h1']}/24",
             f"{ADDRESSES['h2']}/24")
    for host in (h1, h2):
        ip("addr", "add", f"{ADDRESSES6[host.name]}/64", "dev", "eth1", "nodad",
           netns=host.netns)
    etcd = EtcdServer(host=ADDRESSES["h1"], netns=h1.netns).start()
    h1.etcd = etcd
    h2.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    for host in (h1, h2):
        host.plugin = start_plugin(host, IP_AUTODETECTION_METHOD="interface=eth1")
        for net in ("net1", "net2"):
            docker(host, "network", "create", *CALICO, net)
    # The servers every test reaches: web on h1 publishes TCP 8080 and UDP
    # 5353, and 8090 where a listener prints who connected.
    web = run_server(h1, "web", "-p", "8080:80", "-p", "5353:53/udp", "-p", "8090:90")
    yield h1, h2, web


def run_server(host, name, *publish, ports=(80, 53)):
    docker(host, "run", "-tid", "--net", "net1", "--name", name, *publish, "busybox")
    return reach.serve(reach.container(host, name, "net1"), ports)


def host_node(host):
    return reach.host_node(host, ADDRESSES[host.name])


def reaches(src, address, port, proto="tcp"):
    return reach.probe(src, address, proto, port, timeout=2)


def seen_by(node, src, address, port, listen=90):
    """The client address a listener on `listen` in `node` sees for a TCP
    connection from `src` to address:port (of the address's family)."""
    log = run_dir() / f"peer-{node.name}-{listen}.log"
    log.unlink(missing_ok=True)
    v6 = ":" in address
    listener = LabProcess(node.argv(sys.executable, "-c", PEER.format(
        family="AF_INET6" if v6 else "AF_INET", address="::" if v6 else "0.0.0.0",
        v6only="s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)" if v6 else "",
        port=listen)), log)
    node.host.processes.append(listener)
    listener.start()
    try:
        assert wait_until(lambda: "ready" in log.read_text(), 10, 0.05)
        assert reaches(src, address, port)
        assert wait_until(lambda: len(log.read_text().split()) > 1, 5, 0.05)
        return log.read_text().split()[1]
    finally:
        listener.kill()


def bindings_of(host, container, network="net1"):
    record = wep(host, endpoint_id(host, container, network))
    return record and record["metadata"]["annotations"].get(PUBLISHED_PORTS)


def dnat_rules(host) -> list[str]:
    listing = in_host(host, ["nft", "list", "table", *PORTS_TABLE])
    return sorted(line.strip() for line in listing.splitlines() if " dnat " in line)


def test_reached_from_everywhere_with_the_clients_address(pair):
    h1, h2, web = pair
    h1_address = ADDRESSES["h1"]
    wait(lambda: reaches(host_node(h2), h1_address, 8080), 15, "the published port")
    assert reaches(host_node(h2), h1_address, 5353, "udp")
    assert reaches(host_node(h1), "127.0.0.1", 8080)  # the host itself
    assert reaches(host_node(h1), h1_address, 8080)
    for host in (h1, h2):  # containers of the other network, and of its own
        for network in ("net1", "net2"):
            assert reaches(reach.container(host, f"client-{network}", network), h1_address,
                           8080), (host.name, network)
    assert reaches(web, h1_address, 8080)  # hairpin
    assert not reaches(reach.container(h2, "client-net2", "net2"), web.ip, 80)  # isolated
    # The container sees the client's own address, as behind Docker's bridge;
    # a container on h2 leaves its host through the pool's NAT outgoing.
    assert seen_by(web, host_node(h2), h1_address, 8090) == ADDRESSES["h2"]
    assert seen_by(web, reach.container(h2, "client-net2", "net2"), h1_address,
                   8090) == ADDRESSES["h2"]
    client = reach.container(h1, "client-net2", "net2")
    assert seen_by(web, client, h1_address, 8090) == client.ip


def test_loopback_only_a_range_and_any_port(pair):
    h1, h2, _ = pair
    run_server(h1, "local", "-p", "127.0.0.1:8181:80")
    run_server(h1, "ranged", "-p", "8200-8202:80-82", ports=(80, 81, 82))
    run_server(h1, "any", "--expose", "80", "-P")
    wait(lambda: reaches(host_node(h1), "127.0.0.1", 8181), 15, "127.0.0.1:8181")
    assert not reaches(host_node(h2), ADDRESSES["h1"], 8181)
    assert all(reaches(host_node(h2), ADDRESSES["h1"], port) for port in (8200, 8201, 8202))
    # -P: dockerd leaves the host port to the driver, which takes one of the
    # ephemeral range; dockerd cannot show a remote driver's choice (docker
    # port), the endpoint's record holds it.
    chosen = [b["hostPort"] for b in json.loads(bindings_of(h1, "any"))]
    assert len(chosen) == 1 and chosen[0] >= 32768
    assert reaches(host_node(h2), ADDRESSES["h1"], chosen[0])


def test_ipv6(pair):
    """-p 8088:90 on every address of both families, -p [::]:8089:90 on IPv6 only."""
    h1, h2, _ = pair
    docker(h1, "network", "create", "--ipv6", *CALICO, "net6")
    docker(h1, "run", "-tid", "--net", "net6", "--name", "web6", "-p", "8088:90",
           "-p", "[::]:8089:90", "busybox")
    web6 = reach.serve(reach.container(h1, "web6", "net6"), (90,))  # IPv4 only
    client = host_node(h2)
    wait(lambda: reaches(client, ADDRESSES["h1"], 8088), 15, "8088 on IPv4")
    assert not reaches(client, ADDRESSES["h1"], 8089)  # [::]: IPv6 only
    assert seen_by(web6, client, ADDRESSES6["h1"], 8088) == ADDRESSES6["h2"]
    assert seen_by(web6, client, ADDRESSES6["h1"], 8089) == ADDRESSES6["h2"]
    docker(h1, "rm", "-f", "web6")


def test_a_taken_port_is_refused_and_nothing_is_left(pair):
    h1, h2, _ = pair
    weps = len(keys(h1, WEP_PREFIX))
    error = docker_fails(h1, "run", "-d", "--net", "net1", "-p", "8080:80", "--name", "late",
                         "busybox", "sleep", "60")
    assert "cannot publish port 8080/tcp" in error and "another container" in error
    # A bridge container's port: docker-proxy listens on it on h1.
    docker(h1, "run", "-tid", "-p", "8400:80", "--name", "bridged", "busybox")
    error = docker_fails(h1, "run", "-d", "--net", "net1", "-p", "8400:80", "--name", "late2",
                         "busybox", "sleep", "60")
    assert "cannot publish port 8400/tcp" in error and "a process" in error
    assert len(keys(h1, WEP_PREFIX)) == weps
    # Without docker-proxy (h2), a bridge container and a Calico one side by side.
    docker(h2, "run", "-tid", "-p", "8400:80", "--name", "bridged", "busybox")
    reach.serve(reach.container(h2, "bridged", "bridge"), (80,))
    run_server(h2, "beside", "-p", "8401:80")
    wait(lambda: reaches(host_node(h1), ADDRESSES["h2"], 8401), 15, "h2's published port")
    assert reaches(host_node(h1), ADDRESSES["h2"], 8400)


def test_bindings_follow_the_running_containers(pair):
    h1, h2, _ = pair
    run_server(h1, "cycled", "-p", "8500:80")
    wait(lambda: reaches(host_node(h2), ADDRESSES["h1"], 8500), 15, "8500")
    running = dnat_rules(h1)
    docker(h1, "stop", "-t", "0", "cycled")
    wait(lambda: not any("8500" in r for r in dnat_rules(h1)), 10, "8500's rule to go")
    assert not reaches(host_node(h2), ADDRESSES["h1"], 8500)
    docker(h1, "start", "cycled")
    reach.serve(reach.container(h1, "cycled", "net1"), (80,))
    wait(lambda: reaches(host_node(h2), ADDRESSES["h1"], 8500), 15, "8500 after start")
    assert len(dnat_rules(h1)) == len(running)
    docker(h1, "rm", "-f", "cycled")
    wait(lambda: len(dnat_rules(h1)) == len(running) - 1, 10, "8500's rule to go")


def test_a_killed_plugin_keeps_the_bindings(pair):
    h1, h2, _ = pair
    before = dnat_rules(h1)
    h1.plugin.kill()  # SIGKILL to its process group: plugin and agent
    assert reaches(host_node(h2), ADDRESSES["h1"], 8080)
    h1.plugin = start_plugin(h1, IP_AUTODETECTION_METHOD="interface=eth1")
    wait(lambda: "published ports:" in h1.plugin.log_tail(200), 20, "the new agent's table")
    assert dnat_rules(h1) == before
    assert reaches(host_node(h2), ADDRESSES["h1"], 8080)


def test_compose_ports(pair):
    h1, h2, _ = pair
    project = Project(h1, "pub", COMPOSE)
    project.compose("up", "-d")
    try:
        reach.serve(reach.container(h1, project.container("web"), "pub_front"), (80,))
        wait(lambda: reaches(host_node(h2), ADDRESSES["h1"], 8600), 15, "compose's port")
    finally:
        project.compose("down", "--timeout", "1")
    wait(lambda: not any("8600" in r for r in dnat_rules(h1)), 10, "8600's rule to go")


def test_a_dockerd_restart_leaves_the_running_containers_bindings(pair):
    """Last: dockerd stops every container; only --restart=always ones come back."""
    h1, h2, _ = pair
    run_server(h1, "durable", "--restart=always", "-p", "8700:80")
    wait(lambda: reaches(host_node(h2), ADDRESSES["h1"], 8700), 15, "8700")
    h1.restart()
    wait(lambda: docker(h1, "inspect", "-f", "{{.State.Running}}", "durable") == "true", 30,
         "the --restart=always container")
    reach.serve(reach.container(h1, "durable", "net1"), (80,))
    wait(lambda: all("8700" in r for r in dnat_rules(h1)), 15, "only 8700's rule")
    assert len(dnat_rules(h1)) == 1
    # The restart rewrites every endpoint at once: the agent applies the
    # burst as Felix does, a batch per 100 ms, so the container's chains may
    # come a moment after its binding.
    wait(lambda: reaches(host_node(h2), ADDRESSES["h1"], 8700), 15, "8700 after the restart")
