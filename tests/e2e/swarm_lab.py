"""The lab of the Swarm tests and bench: three Docker hosts in network
namespaces on one link, forming a swarm (h1 the manager, h2 and h3
workers), each with the managed plugin installed from a registry, as users
install it on every node, and one etcd.

    h1 eth1 10.0.30.1 --+
    h2 eth1 10.0.30.2 --+-- br0 (seg)      etcd 10.0.30.1:2379 and the
    h3 eth1 10.0.30.3 --+                  registry 10.0.30.1:5000, in h1

The swarm runs over the link (2377, 7946); no overlay network is used, so
VXLAN's 4789 carries nothing. Services run the registry's busybox, which
every worker pulls, as a swarm node does.
"""

import contextlib
import re
import types

from tests.e2e.calico_host import container_ip, docker
from tests.e2e.managed_plugin import PLUGIN, create_plugin, plugin_log
from tests.lab import EtcdServer
from tests.lab.common import LabError, in_parallel, wait_until
from tests.lab.registry import start_registry

ADDRESSES = {"h1": "10.0.30.1", "h2": "10.0.30.2", "h3": "10.0.30.3"}
POOL = "192.171.0.0/16"
SERVICE_LABEL = "com.docker.swarm.service.name"


class Swarm:
    """The started lab: `hosts` (h1 the manager), `etcd`, `registry`
    ("address:port") and `image` (busybox, from the registry)."""

    def __init__(self, hosts, etcd, registry):
        self.hosts, self.etcd, self.registry = hosts, etcd, registry
        self.manager = hosts[0]
        self.image = f"{registry}/busybox:latest"

    def host(self, name):
        return next(h for h in self.hosts if h.name == name)

    def create_network(self, name, *options):
        """The README's path: a config-only network NAME-cfg with Calico's
        IPAM on every node, then the swarm network NAME from it on the manager."""
        for host in self.hosts:
            docker(host, "network", "create", "--config-only", "--ipam-driver", PLUGIN,
                   f"{name}-cfg")
        docker(self.manager, "network", "create", "-d", PLUGIN, "--scope", "swarm",
               "--config-from", f"{name}-cfg", "--attachable", *options, name)

    def create_service(self, name, network, replicas, *options, command=("sleep", "86400")):
        """`docker service create` (dnsrr unless options say otherwise) of the
        registry's busybox; returns once its `replicas` tasks run."""
        docker(self.manager, "service", "create", "--detach", "--name", name, "--network",
               network, "--replicas", replicas, *options, self.image, *command)
        self.wait_running(name, replicas)

    def wait_running(self, service, replicas, timeout=90):
        """Wait until `replicas` task containers of `service` run, across the hosts."""
        if not wait_until(lambda: sum(map(len, self.tasks(service).values())) == replicas,
                          timeout, 0.5):
            states = self.manager.docker("service", "ps", "--no-trunc", service).stdout
            raise AssertionError(f"{service}: not {replicas} tasks running in {timeout} s:\n"
                                 f"{states}\n{self.logs()}")

    def tasks(self, service):
        """{host: [task container names]} of the running tasks of `service`."""
        return {host: host.docker("ps", "--filter", f"label={SERVICE_LABEL}={service}",
                                  "--format", "{{.Names}}").stdout.split()
                for host in self.hosts}

    def task_addresses(self, service, network):
        """{task container name: (host, its address on `network`)}."""
        return {name: (host, container_ip(host, name, network))
                for host, names in self.tasks(service).items() for name in names}

    def remove_service(self, name):
        docker(self.manager, "service", "rm", name)
        if not wait_until(
                lambda: not any(self.tasks(name).values()), 60, 0.5):
            raise AssertionError(f"tasks of {name} still run: {self.tasks(name)}")

    def logs(self):
        return "\n".join(f"plugin log of {h.name}:\n{plugin_log(h, h.plugin_id, 15)}"
                         for h in self.hosts)


@contextlib.contextmanager
def swarm_lab(make_host, plugin_dir, **settings):
    """Three started hosts (make_host: the docker_host_factory fixture) in a
    swarm, the plugin built in `plugin_dir` installed from the registry on
    each and enabled, `settings` (KEY=value) added to its own."""
    lab = make_host.lab
    registry = f"{ADDRESSES['h1']}:5000"
    hosts = [make_host(etcd=False, daemon_config={"insecure-registries": [registry]})
             for _ in ADDRESSES]
    lab.segment("swarm-seg", *((host.netns, f"{ADDRESSES[host.name]}/24") for host in hosts))
    h1 = hosts[0]
    etcd = EtcdServer(host=ADDRESSES["h1"], netns=h1.netns).start()
    h1.etcd = etcd  # h1 is closed last, so etcd outlives every host's containers
    for host in hosts[1:]:
        # The same etcd to read, closed with h1 only.
        host.etcd = types.SimpleNamespace(endpoints=etcd.endpoints, get=etcd.get, ctl=etcd.ctl,
                                          close=lambda: None)
    start_registry(h1, ADDRESSES["h1"])
    swarm = Swarm(hosts, etcd, registry)
    _push(h1, plugin_dir, swarm)
    in_parallel(lambda n: _install(hosts[n], swarm, settings), len(hosts))
    _form(hosts)
    yield swarm


def _push(host, plugin_dir, swarm):
    """The plugin and busybox into the registry, as a release would be."""
    remote = f"{swarm.registry}/calico:latest"
    create_plugin(host, plugin_dir, remote)
    docker(host, "plugin", "push", remote)
    docker(host, "plugin", "rm", remote)
    docker(host, "tag", "busybox:latest", swarm.image)
    docker(host, "push", swarm.image)


def _install(host, swarm, settings):
    """`docker plugin install --alias calico` from the registry, configured
    for this node (and so enabled)."""
    own = {"ETCD_ENDPOINTS": swarm.etcd.endpoints, "NODENAME": host.name,
           # The default route is not the link to the other hosts.
           "IP_AUTODETECTION_METHOD": "interface=eth1",
           "CALICO_IPV4POOL_CIDR": POOL,
           # The lab's dockerd does not listen on /var/run/docker.sock.
           "docker-socket.source": host.dir / "docker.sock", **settings}
    host.plugin_id = None
    result = host.docker("plugin", "install", "--alias", PLUGIN.partition(":")[0],
                         "--grant-all-permissions", f"{swarm.registry}/calico:latest",
                         *(f"{k}={v}" for k, v in own.items()), timeout=300)
    found = host.docker("plugin", "inspect", "-f", "{{.Id}}", PLUGIN)
    host.plugin_id = found.stdout.strip() if found.returncode == 0 else None
    if result.returncode:
        raise LabError(f"docker plugin install on {host.name} failed: {result.stderr.strip()}"
                       f"\nplugin log:\n{plugin_log(host, host.plugin_id)}")


def _form(hosts):
    """h1 initialises the swarm on its link address; the others join as workers."""
    manager = hosts[0]
    address = ADDRESSES[manager.name]
    docker(manager, "swarm", "init", "--advertise-addr", address,
           "--listen-addr", f"{address}:2377")
    token = docker(manager, "swarm", "join-token", "-q", "worker")
    for host in hosts[1:]:
        docker(host, "swarm", "join", "--token", token,
               "--advertise-addr", ADDRESSES[host.name], f"{address}:2377")
    if not wait_until(lambda: len(re.findall(r"\bReady\b", manager.docker(
            "node", "ls", "--format", "{{.Status}}").stdout)) == len(hosts), 30, 0.5):
        raise LabError(f"the swarm's nodes are not all ready:\n"
                       f"{manager.docker('node', 'ls').stdout}")
