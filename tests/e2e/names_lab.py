"""The lab of the names tests and bench: two Docker hosts in network
namespaces, each with dockerd, the plugin and its node agent, one etcd, and
a DNS server of the test's own standing for the hosts' nameserver.

    h1 eth1 10.0.21.1/24 ---------- h2 eth1 10.0.21.2/24
    h1 dns0 10.53.1.1/24 --+    +-- h2 dns0 10.53.2.1/24
                           upstream (10.53.1.2, 10.53.2.2; NAMESERVER on lo)

dockerd reads the machine's /etc/resolv.conf; its first IPv4 non-loopback
nameserver (an address outside the lab) is given to the upstream namespace
and routed to it from both hosts, so that the containers' external questions
reach the test's server and nothing leaves the lab.

dockerd 28 and later ask the host's nameservers from the host's own
namespace, where the agent cannot see the question: there the hosts' daemon.json
lists 169.254.1.1 first in `dns`, then that nameserver, the setting the
README and the quick start give (daemon_config).
"""

import contextlib
import ipaddress
import os
import subprocess
import sys
import types

import pytest

from agent.names.upstreams import GATEWAY
from plugin.cli.names_check import HOST_NETNS_FROM
from tests.e2e.calico_host import CALICO, REPO, docker, start_plugin
from tests.lab import EtcdServer, LabProcess
from tests.lab.common import run_dir
from tests.lab.dockerd import engine_major

LINK = {"h1": "10.0.21.1", "h2": "10.0.21.2"}
EXTERNAL = ("external.example", "10.99.0.7")  # what the upstream answers


def machine_nameserver():
    try:
        with open("/etc/resolv.conf") as f:
            servers = [line.split()[1] for line in f if line.startswith("nameserver")]
    except OSError:
        servers = []
    for server in servers:
        address = ipaddress.ip_address(server)
        if address.version == 4 and not address.is_loopback:
            return server
    return None


def nameserver_or_skip():
    """machine_nameserver(), or skip the module that needs one."""
    nameserver = machine_nameserver()
    if nameserver is None:
        pytest.skip("/etc/resolv.conf has no IPv4 non-loopback nameserver for dockerd to "
                    "ask from the containers")
    return nameserver


def daemon_config(nameserver, major=None):
    """The hosts' daemon.json: on dockerd 28 and later, 169.254.1.1 first in
    `dns`, then the nameserver; nothing before (names need no setting)."""
    major = engine_major() if major is None else major
    return {"dns": [GATEWAY, nameserver]} if major >= HOST_NETNS_FROM else {}


@contextlib.contextmanager
def names_lab(make_host, nameserver, code=REPO):
    """Two started hosts with etcd, the plugin (from the source tree `code`),
    net1 and net2, and the upstream: a namespace with h1, h2, plugins,
    nameserver, daemon_config."""
    lab = make_host.lab
    config = daemon_config(nameserver)
    h1, h2 = (make_host(etcd=False, daemon_config=config) for _ in range(2))
    lab.veth(h1.netns, "eth1", h2.netns, "eth1", f"{LINK['h1']}/24", f"{LINK['h2']}/24")
    upstream = lab.netns("upstream")
    for n, host in ((1, h1), (2, h2)):
        lab.veth(host.netns, "dns0", upstream, f"h{n}", f"10.53.{n}.1/24", f"10.53.{n}.2/24")
        lab.route(host.netns, f"{nameserver}/32", via=f"10.53.{n}.2")
    lab.addr(upstream, "lo", f"{nameserver}/32")
    subprocess.run(["ip", "-n", upstream, "link", "set", "lo", "up"], check=True)
    server = LabProcess([sys.executable, "-m", "tests.e2e.dns_upstream", nameserver, "53",
                         "=".join(EXTERNAL)], run_dir() / "dns-upstream.log",
                        {**os.environ, "PYTHONPATH": REPO}, upstream).start()
    etcd = EtcdServer(host=LINK["h1"], netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    h2.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, close=lambda: None)
    plugins = {}
    try:
        for host in (h1, h2):
            plugins[host.name] = host.plugin = start_plugin(host, code=code,
                                                            IP=f"{LINK[host.name]}/24")
            for net in ("net1", "net2"):
                docker(host, "network", "create", *CALICO, net)
        yield types.SimpleNamespace(h1=h1, h2=h2, plugins=plugins, nameserver=nameserver,
                                    daemon_config=config)
    finally:
        server.stop()
