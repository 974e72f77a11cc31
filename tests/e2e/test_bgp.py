"""BGP as calico/node does it (CALICO_NETWORKING_BACKEND=bird): three Docker
hosts whose agents run BIRD, a top-of-rack router running BIRD (eBGP,
AS 65000), and an outside machine behind the router on a subnet of its own.

    h1 eth1 10.0.77.1 fd00:77::1 --+
    h2 eth1 10.0.77.2 fd00:77::2 --+-- br0 -- tor eth1 10.0.77.254 fd00:77::fe
    h3 eth1 10.0.77.3 fd00:77::3 --+          tor eth2 10.88.0.254 fd00:88::fe -- outside
                                                                   10.88.0.1 fd00:88::1

The hosts mesh with each other (iBGP, AS 64512) and peer with the router
through one global BGPPeer per family.  The router learns every host's
blocks and announces the outside subnet; nothing else routes: no static
routes to the pools anywhere, and the agents program none of the plain
pool's routes.  A GlobalNetworkPolicy with a `nets` rule lets the outside
machine in.  Then: a container started later (a new block) is reachable
within seconds, deleting the BGPPeer withdraws the routes, and a
route-reflector topology (h1 the reflector, mesh off) still routes.
"""

import json
import subprocess
import types

import pytest
import yaml
from netaddr import IPNetwork

from tests.e2e.calico_host import (CALICO, agent_run_dir, calicoctl, container_ip, docker,
                                   routes, start_plugin, wait)
from tests.lab import EtcdServer, LabProcess
from tests.lab.common import ip

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

ADDRESS = {"h1": ("10.0.77.1", "fd00:77::1"), "h2": ("10.0.77.2", "fd00:77::2"),
           "h3": ("10.0.77.3", "fd00:77::3")}
TOR, TOR6 = "10.0.77.254", "fd00:77::fe"
OUTSIDE, OUTSIDE6 = "10.88.0.1", "fd00:88::1"
LATER_POOL = "10.123.0.0/16"
RESOURCES = "/calico/resources/v3/projectcalico.org/"
TOR_CONFIG = """\
router id 10.0.77.254;
protocol device { scan time 2; }
protocol direct { ipv4; ipv6; interface "eth2"; }
protocol kernel { scan time 2; ipv4 { import none; export where source = RTS_BGP; }; }
protocol kernel { scan time 2; ipv6 { import none; export where source = RTS_BGP; }; }
template bgp hosts4 {
  local 10.0.77.254 as 65000; connect retry time 2; error wait time 1, 5;
  ipv4 { import all; export where source ~ [ RTS_BGP, RTS_DEVICE ]; };
}
template bgp hosts6 {
  local fd00:77::fe as 65000; connect retry time 2; error wait time 1, 5;
  ipv6 { import all; export where source ~ [ RTS_BGP, RTS_DEVICE ]; };
}
""" + "".join(f"protocol bgp {name} from hosts4 {{ neighbor {v4} as 64512; }}\n"
              f"protocol bgp {name}v6 from hosts6 {{ neighbor {v6} as 64512; }}\n"
              for name, (v4, v6) in ADDRESS.items())


class Cluster:
    def __init__(self, hosts, etcd, tor, outside, tor_socket):
        self.hosts = {h.name: h for h in hosts}
        self.etcd, self.tor, self.outside, self.tor_socket = etcd, tor, outside, tor_socket
        self.containers = {}  # name -> (host, IPv4, IPv6)

    def put(self, kind_plural, name, spec, metadata=None):
        kind = {"bgppeers": "BGPPeer", "bgpconfigurations": "BGPConfiguration"}[kind_plural]
        self.etcd.put(f"{RESOURCES}{kind_plural}/{name}", json.dumps({
            "kind": kind, "apiVersion": "projectcalico.org/v3",
            "metadata": {"name": name, **(metadata or {})}, "spec": spec}))

    def delete(self, kind_plural, name):
        self.etcd.ctl("del", f"{RESOURCES}{kind_plural}/{name}")

    def run(self, host_name, name, network="net1"):
        host = self.hosts[host_name]
        docker(host, "run", "-tid", "--net", network, "--name", name, "busybox")
        self.containers[name] = (host, container_ip(host, name, network),
                                 container_ip(host, name, network, "GlobalIPv6Address"))
        return self.containers[name]


def birdc(socket_path, *command):
    return subprocess.run(["birdc", "-s", str(socket_path), *command], capture_output=True,
                          text=True, timeout=10).stdout


def host_socket(host):
    return agent_run_dir(host) / "bird" / "bird.ctl"


def established(socket_path, protocol):
    return any(line.split()[:1] == [protocol] and "Established" in line
               for line in birdc(socket_path, "show", "protocols").splitlines())


def bird_protocols(socket_path):
    return {line.split()[0] for line in birdc(socket_path, "show", "protocols").splitlines()
            if " BGP " in line}


def pings(netns, address, family=4):
    return subprocess.run(["ip", "netns", "exec", netns, "busybox", "ping",
                           *(["-6"] if family == 6 else []), "-c", "1", "-W", "1", address],
                          capture_output=True).returncode == 0


def block_of(address, prefix):
    return str(IPNetwork(f"{address}/{prefix}").cidr)


@pytest.fixture(scope="module")
def cluster(docker_host_factory, tmp_path_factory):
    lab = docker_host_factory.lab
    hosts = [docker_host_factory(etcd=False) for _ in range(3)]
    seg, tor, outside = lab.netns("bgp-seg"), lab.netns("bgp-tor"), lab.netns("bgp-outside")
    ip("link", "add", "br0", "type", "bridge", netns=seg)
    ip("link", "set", "br0", "up", netns=seg)
    for n, host in enumerate(hosts, 1):
        v4, v6 = ADDRESS[host.name]
        lab.veth(host.netns, "eth1", seg, f"p{n}", f"{v4}/24")
        ip("addr", "add", f"{v6}/64", "dev", "eth1", "nodad", netns=host.netns)
        ip("link", "set", f"p{n}", "master", "br0", netns=seg)
    lab.veth(tor, "eth1", seg, "p9", f"{TOR}/24")
    ip("addr", "add", f"{TOR6}/64", "dev", "eth1", "nodad", netns=tor)
    ip("link", "set", "p9", "master", "br0", netns=seg)
    lab.veth(tor, "eth2", outside, "eth0", "10.88.0.254/24", f"{OUTSIDE}/24")
    ip("addr", "add", "fd00:88::fe/64", "dev", "eth2", "nodad", netns=tor)
    ip("addr", "add", f"{OUTSIDE6}/64", "dev", "eth0", "nodad", netns=outside)
    lab.route(outside, "default", via="10.88.0.254")
    ip("-6", "route", "add", "default", "via", "fd00:88::fe", netns=outside)
    for sysctl in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        ip("netns", "exec", tor, "sysctl", "-qw", sysctl)
    work = tmp_path_factory.mktemp("tor")
    (work / "tor.cfg").write_text(TOR_CONFIG)
    socket_path = work / "tor.ctl"
    LabProcess(["bird", "-f", "-c", str(work / "tor.cfg"), "-s", str(socket_path),
                "-P", str(work / "tor.pid")], work / "tor.log", netns=tor).start()

    etcd = EtcdServer(host=ADDRESS["h1"][0], netns=hosts[0].netns).start()
    hosts[0].etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    for host in hosts[1:]:
        host.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    c = Cluster(hosts, etcd, tor, outside, socket_path)
    for peer, address in (("tor", TOR), ("tor6", TOR6)):
        c.put("bgppeers", peer, {"peerIP": address, "asNumber": 65000})
    for host in hosts:
        v4, v6 = ADDRESS[host.name]
        start_plugin(host, CALICO_NETWORKING_BACKEND="bird", IP=f"{v4}/24", IP6=f"{v6}/64")
        docker(host, "network", "create", "--ipv6", *CALICO, "net1")
    policy = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "from-outside"},
              "spec": {"selector": "all()",
                       "ingress": [{"action": "Allow", "source": {"nets": [net]}}
                                   for net in ("10.88.0.0/24", "fd00:88::/64")]
                       + [{"action": "Pass"}]}}
    path = hosts[0].dir / "from-outside.yaml"
    path.write_text(yaml.safe_dump(policy))
    calicoctl(hosts[0], "apply", "-f", str(path))
    for name in ("h1", "h2", "h3"):
        c.run(name, f"wl-{name}")
    yield c


def test_mesh_and_router_sessions_are_established_on_every_host(cluster):
    for name, host in cluster.hosts.items():
        others = [a for n, a in ADDRESS.items() if n != name]
        expected = {f"Mesh_{a.replace('.', '_').replace(':', '_')}" for pair in others
                    for a in pair} | {"Global_10_0_77_254", "Global_fd00_77__fe"}
        assert bird_protocols(host_socket(host)) == expected
        for protocol in expected:
            wait(lambda: established(host_socket(host), protocol), 30,
                 f"{protocol} Established on {name}")
        sessions = host.run_in_netns(["ss", "-Htn", "state", "established",
                                      "( sport = :179 or dport = :179 )"]).stdout
        assert len(sessions.splitlines()) == len(expected)
        # What a user of the guides reads: calicoctl's tables, from our CLI.
        status = calicoctl(host, "node", "status").stdout
        assert status.startswith("Calico process is running."), status
        rows = {cells[0]: cells[1:] for cells in
                ([c.strip() for c in line.strip().strip("|").split("|")]
                 for line in status.splitlines() if line.startswith("|"))}
        for address in (a for pair in others for a in pair):
            peer_type, state, _, info = rows[address]
            assert (peer_type, state, info) == ("node-to-node mesh", "up", "Established"), status
        for address in (TOR, TOR6):
            assert rows[address][0] == "global" and rows[address][3] == "Established", status
    for name in ADDRESS:
        assert established(cluster.tor_socket, name)
        assert established(cluster.tor_socket, f"{name}v6")


def test_the_router_learns_every_hosts_blocks_with_the_right_next_hop(cluster):
    tor = types.SimpleNamespace(netns=cluster.tor)
    for name, (host, v4, v6) in cluster.containers.items():
        host_v4, host_v6 = ADDRESS[host.name]
        block = block_of(v4, 26)
        wait(lambda: any(r.startswith(f"{block} via {host_v4} dev eth1 proto bird")
                         for r in routes(tor)), 20, f"the router's route to {block}")
        block6 = block_of(v6, 122)
        wait(lambda: any(r.startswith(f"{block6} via {host_v6} dev eth1 proto bird")
                         for r in routes(tor, family=6)), 20, f"the router's route to {block6}")
        # The hosts learn the blocks from each other, and BIRD programs them;
        # the agent programs none of them.
        for other in cluster.hosts.values():
            if other is not host:
                wait(lambda: any(r.startswith(f"{block} via {host_v4} dev eth1 proto bird")
                                 for r in routes(other)), 20, f"{other.name}'s route to {block}")
                assert not any(r.startswith(block) for r in routes(other, "proto", "80"))
    for host in cluster.hosts.values():
        # The outside subnet, from the router; never a default route from BIRD.
        assert any(r.startswith(f"10.88.0.0/24 via {TOR}") for r in routes(host, "proto", "bird"))
        assert not any(r.startswith("default") for r in routes(host, "proto", "bird"))


def test_the_outside_machine_reaches_containers_on_every_host(cluster):
    for name, (_, v4, v6) in cluster.containers.items():
        wait(lambda: pings(cluster.outside, v4), 20, f"outside -> {name} {v4}")
        wait(lambda: pings(cluster.outside, v6, 6), 20, f"outside -> {name} {v6}")


def test_a_container_started_later_in_a_new_block_is_reachable_within_seconds(cluster):
    h2 = cluster.hosts["h2"]
    calicoctl(h2, "pool", "create", LATER_POOL, "--name", "later")
    docker(h2, "network", "create", *CALICO, "--subnet", LATER_POOL, "net2")
    _, v4, _ = cluster.run("h2", "wl-later", "net2")
    wait(lambda: pings(cluster.outside, v4), 10, f"outside -> wl-later {v4}")


def test_deleting_the_bgppeer_withdraws_the_routes(cluster):
    tor = types.SimpleNamespace(netns=cluster.tor)
    try:
        cluster.delete("bgppeers", "tor")
        wait(lambda: not routes(tor, "proto", "bird"), 20, "the router's IPv4 routes withdrawn")
        assert routes(tor, "proto", "bird", family=6)  # the IPv6 peering stays
        for host in cluster.hosts.values():
            wait(lambda: "Global_10_0_77_254" not in bird_protocols(host_socket(host)), 10,
                 f"{host.name}'s Global_10_0_77_254 gone")
            assert established(host_socket(host), "Global_fd00_77__fe")
    finally:
        cluster.put("bgppeers", "tor", {"peerIP": TOR, "asNumber": 65000})
    _, v4, _ = cluster.containers["wl-h1"]
    wait(lambda: pings(cluster.outside, v4), 30, "outside -> wl-h1 once the peer is back")


def test_a_route_reflector_topology_still_routes(cluster):
    h1 = cluster.hosts["h1"]
    node = json.loads(cluster.etcd.get(f"{RESOURCES}nodes/h1"))
    node["metadata"].setdefault("labels", {})["route-reflector"] = "true"
    node["spec"]["bgp"]["routeReflectorClusterID"] = "224.0.0.1"
    cluster.etcd.put(f"{RESOURCES}nodes/h1", json.dumps(node))
    cluster.put("bgpconfigurations", "default", {"nodeToNodeMeshEnabled": False})
    cluster.put("bgppeers", "to-reflector",
                {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"})
    h2, h3 = cluster.hosts["h2"], cluster.hosts["h3"]
    for client in (h2, h3):
        wait(lambda: established(host_socket(client), "Node_10_0_77_1"), 30,
             f"{client.name} peers with the reflector")
        assert not any(p.startswith("Mesh_") for p in bird_protocols(host_socket(client)))
    assert {"Node_10_0_77_2", "Node_10_0_77_3"} <= bird_protocols(host_socket(h1))
    # h2 learns h3's block through h1, with h3 as the next hop.
    _, v4_h3, _ = cluster.containers["wl-h3"]
    block = block_of(v4_h3, 26)
    wait(lambda: any(r.startswith(f"{block} via 10.0.77.3 dev eth1 proto bird")
                     for r in routes(h2)), 20, "h2's route to h3's block through the reflector")
    wait(lambda: h2.docker("exec", "wl-h2", "ping", "-c", "1", "-W", "2", v4_h3).returncode == 0,
         20, "wl-h2 -> wl-h3 through the reflector's routes")
    wait(lambda: pings(cluster.outside, v4_h3), 20, "outside -> wl-h3")
    assert h1  # the reflector itself still holds its own sessions to the router
    assert established(host_socket(h1), "Global_10_0_77_254")
