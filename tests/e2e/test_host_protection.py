"""What a container may open on Docker hosts (issue 18): two hosts of the
names lab (tests/e2e/names_lab.py: etcd on h1's lab address, the plugin and
its agent on both), with IPv6 on their link and a dual-stack network.

* its own host: refused by DefaultEndpointToHostAction, Drop by default as in
  Felix, over IPv4 and IPv6; opened by a FelixConfiguration applied with the
  CLI while everything runs; DNS by name works throughout.
* etcd's client port, on h1 and from h2, whatever that action, and no key
  written through it; opened only by a policy that names it.
* h1 protected by a HostEndpoint on its lab link and a policy that opens a
  host port to one Calico network of h2 only: the failsafe ports (ssh,
  etcd for h2's agent and CLI) stay open, names, routes and isolation
  between containers are unchanged, and deleting them opens the port again.
"""

import base64
import json
import sys
import textwrap

import pytest

from tests.e2e import reach
from tests.e2e.calico_host import CALICO, calicoctl, docker
from tests.e2e.names_lab import LINK, names_lab, nameserver_or_skip
from tests.lab.common import LabError, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

LINK6 = {"h1": "fd00:21::1", "h2": "fd00:21::2"}
SERVICE = 7070  # a service of the host's own, on every address


@pytest.fixture(scope="module")
def hosts(docker_host_factory):
    with names_lab(docker_host_factory, nameserver_or_skip()) as lab:
        for host in (lab.h1, lab.h2):
            lab_host_ipv6(host)
            listen(host, SERVICE)
            docker(host, "network", "create", "--ipv6", *CALICO, "net6")
        yield lab


def lab_host_ipv6(host):
    host.run_in_netns(f"ip addr add {LINK6[host.name]}/64 dev eth1 nodad")


def listen(host, port):
    """A TCP listener on every IPv4 and IPv6 address of the host, stopped
    with the host."""
    code = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET6)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", {port}))
        s.listen(64)
        print("ready", flush=True)
        while True:
            s.accept()[0].close()
    """)
    process = host.start_process([sys.executable, "-c", code], name=f"listener-{port}")
    if not wait_until(lambda: "ready" in process.log_path.read_text() or not process.running,
                      10, 0.05) or not process.running:
        raise LabError(f"the listener on {host.name}:{port} did not start:\n"
                       f"{process.log_tail()}")


def apply(host, name, text):
    path = host.dir / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    result = calicoctl(host, "apply", "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr


def felix_configuration(host, name, action):
    apply(host, f"felix-{name}", f"""
        apiVersion: projectcalico.org/v3
        kind: FelixConfiguration
        metadata:
          name: {name}
        spec:
          defaultEndpointToHostAction: {action}
        """)


def delete(host, kind, name):
    result = calicoctl(host, "delete", kind, name, check=False)
    assert result.returncode == 0, result.stderr


def own_host(container, expected, port=SERVICE):
    """Cases for reach.mismatches: `container` to its own host's addresses."""
    host = container.host.name
    return [(container, address, f"tcp/{port}", expected)
            for address in (LINK[host], LINK6[host], "169.254.1.1")]


def becomes(cases, what):
    """Wait for a change made through etcd to reach the agents' tables."""
    assert wait_until(lambda: not reach.mismatches(cases, SERVICE), 20, 0.5), \
        f"{what}: {reach.mismatches(cases, SERVICE)}"


def pings_by_name(host, container, name):
    """IPv4: the names lab routes no IPv6 between hosts (IP6=none)."""
    return wait_until(lambda: host.docker("exec", container, "ping", "-4", "-c", "1", "-W", "2",
                                          name).returncode == 0, 20, 0.5)


def test_own_host_refused_by_default_opened_by_felix_configuration(hosts):
    h1, h2 = hosts.h1, hosts.h2
    c1, c2 = reach.container(h1, "c1", "net6"), reach.container(h2, "c2", "net6")
    assert reach.mismatches(own_host(c1, False) + own_host(c2, False), SERVICE) == []
    # Names: the agent's responder and Docker's resolver behind it, across hosts.
    assert pings_by_name(h1, "c1", "c2") and pings_by_name(h2, "c2", "c1")

    felix_configuration(h1, "node.h1", "Accept")  # no restart: the agents watch
    becomes(own_host(c1, True), "node.h1 Accept")
    assert reach.mismatches(own_host(c2, False), SERVICE) == []  # h1's setting only
    felix_configuration(h1, "default", "accept")
    becomes(own_host(c2, True), "default Accept")
    felix_configuration(h1, "node.h2", "Drop")  # the node's own wins over default
    becomes(own_host(c2, False), "node.h2 Drop")
    for name in ("node.h1", "node.h2", "default"):
        delete(h1, "felixconfiguration", name)
    becomes(own_host(c1, False) + own_host(c2, False), "Felix's default Drop")
    assert pings_by_name(h1, "c1", "c2")


def writes_key(host, container, key):
    """A plain HTTP put into etcd from the container, as an attacker would."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(b"owned").decode()})
    # busybox 1.35's wget -T crashes: busybox timeout bounds it instead.
    return host.docker("exec", container, "timeout", "5", "wget", "-q", "-O", "-",
                       "--post-data", body,
                       f"http://{LINK['h1']}:2379/v3/kv/put").returncode == 0


def test_containers_never_reach_etcd_unless_a_policy_names_it(hosts):
    h1, h2 = hosts.h1, hosts.h2
    etcd, etcd_port = LINK["h1"], "tcp/2379"
    c1, c2 = reach.container(h1, "c1", "net6"), reach.container(h2, "c2", "net6")
    felix_configuration(h1, "default", "Accept")  # every host service open, but etcd
    becomes(own_host(c1, True) + own_host(c2, True), "default Accept")
    closed = [(c1, etcd, etcd_port, False), (c2, etcd, etcd_port, False)]
    assert reach.mismatches(closed, SERVICE) == []
    assert not writes_key(h1, "c1", "/owned-from-h1")
    assert not writes_key(h2, "c2", "/owned-from-h2")
    assert h1.etcd.get("/owned-from-h1") is None and h1.etcd.get("/owned-from-h2") is None

    # A policy that names etcd's address and port opens it to what it selects.
    docker(h2, "network", "create", *CALICO, "etcd-clients")
    client = reach.container(h2, "client", "etcd-clients")
    apply(h1, "gnp-etcd-clients", f"""
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata:
          name: etcd-clients
        spec:
          selector: has(etcd-clients)
          types: [Egress]
          egress:
          - action: Allow
            protocol: TCP
            destination: {{nets: [{etcd}/32], ports: [2379]}}
          - action: Pass
        """)
    becomes([(client, etcd, etcd_port, True)], "the policy naming etcd")
    assert writes_key(h2, "client", "/written-by-client")
    assert h1.etcd.get("/written-by-client") is not None
    assert reach.mismatches(closed, SERVICE) == []  # the others: still closed
    delete(h1, "globalnetworkpolicy", "etcd-clients")
    delete(h1, "felixconfiguration", "default")
    becomes([(client, etcd, etcd_port, False)] + own_host(c1, False), "back to the defaults")


TRUSTED_POOL = "10.66.0.0/24"  # not NAT'd: its containers reach h1 with their own address


def test_a_host_endpoint_closes_a_host_port_but_failsafe_and_one_network(hosts):
    h1, h2 = hosts.h1, hosts.h2
    listen(h1, 22)  # "ssh", a failsafe port
    apply(h1, "trusted-pool", f"""
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {{name: trusted-pool}}
        spec: {{cidr: {TRUSTED_POOL}, natOutgoing: false}}
        """)
    docker(h2, "network", "create", *CALICO, "--subnet", TRUSTED_POOL, "trusted")
    trusted, other = reach.container(h2, "trusted", "trusted"), reach.container(h2, "c2", "net6")
    c1, h2_itself = reach.container(h1, "c1", "net6"), reach.host_node(h2, LINK["h2"])
    h1_port = [(node, LINK["h1"], f"tcp/{SERVICE}", True) for node in (trusted, other, h2_itself)]
    assert reach.mismatches(h1_port, SERVICE) == []
    try:
        apply(h1, "host-endpoint", f"""
            apiVersion: projectcalico.org/v3
            kind: HostEndpoint
            metadata:
              name: h1-eth1
              labels: {{role: docker-host}}
            spec:
              node: h1
              interfaceName: eth1
              expectedIPs: [{LINK["h1"]}]
            ---
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata:
              name: docker-hosts
            spec:
              selector: role == 'docker-host'
              types: [Ingress, Egress]
              ingress:
              - action: Allow
                protocol: TCP
                source: {{selector: has(trusted)}}
                destination: {{ports: [{SERVICE}]}}
              egress:
              - action: Allow
            """)
        becomes([(other, LINK["h1"], f"tcp/{SERVICE}", False)], "the host endpoint")
        assert reach.mismatches([
            (trusted, LINK["h1"], f"tcp/{SERVICE}", True),
            (h2_itself, LINK["h1"], f"tcp/{SERVICE}", False),  # h2 itself: not that network
            (h2_itself, LINK["h1"], "tcp/22", True), (h2_itself, LINK["h1"], "tcp/2379", True),
            (c1, other, "icmp", True), (trusted, c1, "icmp", False)], SERVICE) == []
        # h2's agent and CLI still reach etcd on h1; names and routes work across.
        assert calicoctl(h2, "get", "hostendpoints").stdout.split()[-1] == "h1"
        assert pings_by_name(h2, "c2", "c1") and pings_by_name(h1, "c1", "c2")
    finally:
        delete(h1, "globalnetworkpolicy", "docker-hosts")
        delete(h1, "hostendpoint", "h1-eth1")
    becomes(h1_port, "the host endpoint deleted")
