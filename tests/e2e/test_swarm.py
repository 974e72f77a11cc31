"""Swarm services on Calico networks (tests/e2e/swarm_lab.py: three nodes,
the managed plugin from a registry on each): the README's path
(a config-only network on every node, a swarm network from it, a dnsrr
service), addresses from each node's blocks, reach across hosts and from a
plain `docker run` container, service and task names, isolation from
another swarm network, a GlobalNetworkPolicy selecting services by their
task labels, and nothing left after scaling down and removing.

One lab for the module; the tests run in order and share its services.
"""

import json
import re

import pytest
import yaml
from netaddr import IPAddress, IPNetwork

from tests.e2e import reach
from tests.e2e.calico_host import WEP_PREFIX, calicoctl, docker, keys, wep
from tests.e2e.managed_plugin import PLUGIN, call
from tests.e2e.swarm_lab import ADDRESSES, POOL, SERVICE_LABEL, swarm_lab
from tests.lab.common import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

WEB_REPLICAS = 6
PORT, OTHER_PORT = 7000, 7001  # db serves both; the policy opens PORT only
DB_LABELS = {"org.projectcalico.label.tier": "backend",
             # What `docker stack deploy --compose-file ... shop` adds to each service.
             "com.docker.stack.namespace": "shop"}
BLOCK_PREFIX = "/calico/ipam/v2/assignment/ipv4/block/"
HANDLE_PREFIX = "/calico/ipam/v2/handle/"
PROFILE_PREFIX = "/calico/resources/v3/projectcalico.org/profiles/"
NAMES_CONVERGE = 30  # s: swarm gossips names between nodes within a few seconds
# A node whose dockerd restarted may fail its first join of swarm's gossip
# (networkdb) while the cluster settles; it tries again every 60 s
# (rejoinClusterInterval), and only then do the others learn its new tasks.
NAMES_AFTER_RESTART = 90


@pytest.fixture(scope="module")
def swarm(docker_host_factory, plugin_build):
    with swarm_lab(docker_host_factory, plugin_build,
                   CALICO_LIBNETWORK_LABEL_ENDPOINTS="true") as lab:
        lab.create_network("net1")
        lab.create_network("net2")
        yield lab


@pytest.fixture(scope="module")
def web(swarm):
    """Service web on net1, dnsrr, 6 tasks; {task name: (host, address)}."""
    swarm.create_service("web", "net1", WEB_REPLICAS, "--endpoint-mode", "dnsrr")
    return swarm.task_addresses("web", "net1")


@pytest.fixture(scope="module")
def db(swarm):
    """Service db on net2 (2 tasks), labelled, each task serving TCP on PORT
    and OTHER_PORT; {task name: reach.Node}."""
    labels = [a for k, v in DB_LABELS.items() for a in ("--container-label", f"{k}={v}")]
    swarm.create_service("db", "net2", 2, "--endpoint-mode", "dnsrr", *labels)
    return {name: reach.serve(reach.container(host, name, "net2"), (PORT, OTHER_PORT))
            for name, (host, _) in swarm.task_addresses("db", "net2").items()}


@pytest.fixture(scope="module")
def plain(swarm, web):
    """A plain `docker run --net net1` container on h3 (net1 is attachable)."""
    h3 = swarm.host("h3")
    return reach.container(h3, "plain", "net1")


def resolve(host, container, name):
    """The IPv4 addresses `name` resolves to in the container (Docker's
    embedded DNS); empty when it does not resolve."""
    out = host.docker("exec", container, "nslookup", "-type=a", name).stdout
    answers = out.split("Name:", 1)[1] if "Name:" in out else ""
    return set(re.findall(r"Address:?\s+(\d+\.\d+\.\d+\.\d+)", answers))


def wait_resolves(host, container, name, expected, converge=NAMES_CONVERGE):
    got = set()

    def resolved():
        nonlocal got
        got = resolve(host, container, name)
        return got == expected
    assert wait_until(resolved, converge, 0.5), \
        f"{name} in {container} on {host.name}: {sorted(got)}, expected {sorted(expected)}"


def assert_reach(cases):
    wrong = reach.mismatches(cases, PORT)
    assert not wrong, "\n".join(wrong)


def cali_links(host):
    out = host.run_in_netns(["ip", "-o", "link", "show"]).stdout
    return sorted(re.findall(r"^\d+: (cali[0-9a-f]{11})[@:]", out, re.M))


def affine_blocks(swarm, node):
    prefix = f"/calico/ipam/v2/host/{node}/ipv4/block/"
    return [IPNetwork(k[len(prefix):].replace("-", "/", 1)) for k in keys(swarm, prefix)]


# -- the README's path --------------------------------------------------------

def test_tasks_get_addresses_from_their_nodes_blocks(swarm, web):
    per_host = {host.name: names for host, names in swarm.tasks("web").items()}
    assert all(per_host.values()), f"a node runs no task of web: {per_host}"
    for task, (host, address) in web.items():
        assert IPAddress(address) in IPNetwork("192.171.0.0/16"), (task, address)
        assert any(IPAddress(address) in block for block in affine_blocks(swarm, host.name)), \
            f"{task} on {host.name}: {address} not in its node's blocks"
        endpoint = docker(host, "inspect", "-f",
                          '{{(index .NetworkSettings.Networks "net1").EndpointID}}', task)
        record = wep(host, endpoint)
        assert record is not None, f"no WorkloadEndpoint for {task} on {host.name}"
        assert record["spec"]["node"] == host.name
        assert record["spec"]["ipNetworks"] == [f"{address}/32"]
        assert record["spec"]["profiles"] == ["net1"]


def test_tasks_reach_each_other_across_hosts_and_from_a_plain_container(swarm, web, plain):
    nodes = {task: reach.container(host, task, "net1") for task, (host, _) in web.items()}
    first = {}
    for task, node in nodes.items():
        first.setdefault(node.host.name, node)
    cases = [(src, dst, "icmp", True) for src in first.values()
             for dst in nodes.values() if src is not dst]
    cases += [(plain, dst, "icmp", True) for dst in nodes.values()]
    cases += [(dst, plain, "icmp", True) for dst in first.values()]
    assert_reach(cases)


def test_service_and_task_names_resolve(swarm, web, plain):
    addresses = {address for _, address in web.values()}
    by_host = {}
    for task, (host, address) in web.items():
        by_host.setdefault(host.name, (task, host, address))
    (task1, h1, _), (task2, _, address2) = by_host["h1"], by_host["h2"]
    for host, container in ((h1, task1), (plain.host, plain.name)):
        wait_resolves(host, container, "web", addresses)
        wait_resolves(host, container, "tasks.web", addresses)
        wait_resolves(host, container, task2, {address2})  # a task on another node


def test_another_swarm_network_is_neither_reachable_nor_resolvable(swarm, web, db):
    task, (host, _) = next(iter(web.items()))
    src = reach.container(host, task, "net1")
    assert_reach([(src, dst, what, False) for dst in db.values()
                  for what in ("icmp", "tcp", f"tcp/{OTHER_PORT}")])
    assert resolve(host, task, "db") == set()
    assert resolve(host, task, "tasks.db") == set()


# -- policy by service ------------------------------------------------------

def test_tasks_carry_their_service_labels(swarm, db):
    service_id = docker(swarm.manager, "service", "inspect", "-f", "{{.ID}}", "db")
    for node in db.values():
        endpoint = docker(node.host, "inspect", "-f",
                          '{{(index .NetworkSettings.Networks "net2").EndpointID}}', node.name)
        wanted = {SERVICE_LABEL: "db", "com.docker.swarm.service.id": service_id,
                  "com.docker.stack.namespace": "shop", "tier": "backend"}

        def labelled():
            labels = (wep(node.host, endpoint) or {}).get("metadata", {}).get("labels", {})
            return all(labels.get(k) == v for k, v in wanted.items())
        assert wait_until(labelled, 15, 0.2), \
            f"{node.name}: {wep(node.host, endpoint)['metadata']['labels']}, wanted {wanted}"


def test_policy_by_service_name_opens_one_port_from_web_to_db(swarm, web, db):
    h1 = swarm.manager
    sources = {}
    for task, (host, _) in web.items():
        sources.setdefault(host.name, reach.container(host, task, "net1"))
    policy = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "web-to-db"},
              "spec": {"selector": f"{SERVICE_LABEL} == 'db'",
                       "ingress": [{"action": "Allow", "protocol": "TCP",
                                    "source": {"selector": f"{SERVICE_LABEL} == 'web'"},
                                    "destination": {"ports": [PORT]}},
                                   {"action": "Pass"}]}}
    path = h1.dir / "web-to-db.yaml"
    path.write_text(yaml.safe_dump(policy))

    def cases(opened):
        return [(src, dst, what, opened if what == "tcp" else False)
                for src in sources.values() for dst in db.values()
                for what in ("tcp", f"tcp/{OTHER_PORT}", "icmp")]
    calicoctl(h1, "apply", "-f", str(path))
    try:
        assert wait_until(lambda: not reach.mismatches(cases(True), PORT), 15, 0.5)
        assert_reach(cases(True))
    finally:
        calicoctl(h1, "delete", "globalnetworkpolicy", "web-to-db")
    assert wait_until(lambda: not reach.mismatches(cases(False), PORT), 15, 0.5)


# -- what works otherwise, and clear errors ---------------------------------

def test_default_vip_mode_resolves_to_the_tasks(swarm, web):
    """A node-local network gets no VIP: in the default endpoint mode the
    service's name resolves to its tasks' addresses, as with dnsrr."""
    swarm.create_service("vip", "net1", 2)
    try:
        addresses = {address for _, address in swarm.task_addresses("vip", "net1").values()}
        task, (host, _) = next(iter(web.items()))
        wait_resolves(host, task, "vip", addresses)
    finally:
        swarm.remove_service("vip")


def task_error(swarm, service):
    """The error `docker service ps` shows for the service's tasks, once one has it."""
    found = ""

    def failed():
        nonlocal found
        found = swarm.manager.docker("service", "ps", "--no-trunc", "--format", "{{.Error}}",
                                     service).stdout.strip()
        return bool(found)
    assert wait_until(failed, 60, 0.5), f"no task of {service} failed"
    return found


def test_a_swarm_network_without_config_from_says_what_to_run(swarm):
    docker(swarm.manager, "network", "create", "-d", "calico:latest", "--scope", "swarm",
           "--attachable", "bare")
    docker(swarm.manager, "service", "create", "--detach", "--name", "bare", "--network",
           "bare", "--endpoint-mode", "dnsrr", swarm.image, "sleep", "86400")
    try:
        error = task_error(swarm, "bare")
        assert "created without --config-from" in error, error
        assert "--config-only --ipam-driver calico:latest" in error, error
    finally:
        swarm.remove_service("bare")
        docker(swarm.manager, "network", "rm", "bare")


def test_a_node_without_the_config_only_network(swarm):
    """Docker's own error, in `service ps`: the plugin is never asked."""
    h3 = swarm.host("h3")
    for host in swarm.hosts:
        if host is not h3:
            docker(host, "network", "create", "--config-only", "--ipam-driver", "calico:latest",
                   "partial-cfg")
    docker(swarm.manager, "network", "create", "-d", "calico:latest", "--scope", "swarm",
           "--config-from", "partial-cfg", "partial")
    node = docker(h3, "info", "-f", "{{.Swarm.NodeID}}")
    docker(swarm.manager, "service", "create", "--detach", "--name", "partial", "--network",
           "partial", "--endpoint-mode", "dnsrr", "--constraint", f"node.id=={node}",
           swarm.image, "sleep", "86400")
    try:
        error = task_error(swarm, "partial")
        assert 'configuration network "partial-cfg" does not exist' in error, error
    finally:
        swarm.remove_service("partial")
        docker(swarm.manager, "network", "rm", "partial")
        for host in swarm.hosts:
            if host is not h3:
                docker(host, "network", "rm", "partial-cfg")


# -- restarts and nothing left ------------------------------------------------

def endpoints_match_tasks(swarm, plain_on="h3"):
    """On every node: as many WorkloadEndpoints and cali links as task
    containers of web and db (and the plain container, on `plain_on`)."""
    running = {h.name: len(swarm.tasks("web")[h]) + len(swarm.tasks("db")[h])
               + (h.name == plain_on) for h in swarm.hosts}
    endpoints = {h.name: 0 for h in swarm.hosts}
    for key in keys(swarm, WEP_PREFIX):
        endpoints[key[len(WEP_PREFIX):].split("-libnetwork-")[0]] += 1
    links = {h.name: len(cali_links(h)) for h in swarm.hosts}
    return running == endpoints == links


def spread_onto(swarm, host):
    """Make `host` run web tasks again.  Swarm moves the tasks of a node that
    is down for longer than its heartbeat to the others, and never moves
    running tasks back when it returns: a forced update replaces web's tasks
    one by one, each on the node with the fewest, so `host` gets its share."""
    if swarm.tasks("web")[host]:
        return
    before = all_tasks(swarm, "web")
    docker(swarm.manager, "service", "update", "--detach", "--force",
           "--update-parallelism", "3", "web")

    def spread():
        now = all_tasks(swarm, "web")
        return len(now) == WEB_REPLICAS and not now & before and swarm.tasks("web")[host]
    assert wait_until(spread, 90, 0.5), \
        f"{host.name} runs no task: {swarm.tasks('web')}\n{swarm.logs()}"


def test_a_workers_dockerd_restart_restores_its_tasks_on_calico(swarm, web, db, plain):
    """dockerd enables the plugin before it serves its API and gives up on
    one that does not answer: started while etcd is down, the node's plugin
    answers all the same, and once etcd is back the swarm runs tasks on the
    node again, each on Calico, with nothing left of the old ones. (etcd
    stays up while dockerd stops: releases that cannot reach etcd leave
    their addresses to `ipam gc`.)"""
    h2 = swarm.host("h2")
    h2.stop()
    swarm.etcd.stop()
    try:
        h2.start()
        status, answer = call(h2, "calico.sock", "/Plugin.Activate")
        assert status == 200 and "NetworkDriver" in answer["Implements"], answer
    finally:
        swarm.etcd.start()
    swarm.wait_running("web", WEB_REPLICAS, timeout=120)
    swarm.wait_running("db", 2)
    spread_onto(swarm, h2)
    assert wait_until(lambda: endpoints_match_tasks(swarm), 60, 0.5), swarm.logs()
    tasks = swarm.task_addresses("web", "net1")
    nodes = [reach.container(host, task, "net1") for task, (host, _) in tasks.items()]
    assert_reach([(plain, node, "icmp", True) for node in nodes])



# -- update, drain, the leader's restart, a node without the plugin ------------

def calico_mismatches(swarm):
    """{node: {what: (held, wanted)}} where the node's WorkloadEndpoints'
    addresses, the addresses allocated in its blocks or its cali links
    differ from its running containers' Calico addresses (tasks and plain
    containers alike), and the IPAM handles from the containers' number;
    empty when everything equals the running containers."""
    running = {}
    for host in swarm.hosts:
        ids = host.docker("ps", "-q").stdout.split()
        out = host.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}"
                          "{{.IPAddress}} {{end}}", *ids).stdout if ids else ""
        running[host.name] = {a for a in out.split() if IPAddress(a) in IPNetwork(POOL)}
    endpoints = {h.name: set() for h in swarm.hosts}
    for raw in swarm.etcd.ctl("get", "--prefix", "--print-value-only",
                              WEP_PREFIX).stdout.splitlines():
        record = json.loads(raw)
        endpoints[record["spec"]["node"]] |= {n.split("/")[0]
                                              for n in record["spec"]["ipNetworks"]}
    allocated = {h.name: set() for h in swarm.hosts}
    for raw in swarm.etcd.ctl("get", "--prefix", "--print-value-only",
                              BLOCK_PREFIX).stdout.splitlines():
        block = json.loads(raw)
        first = IPNetwork(block["cidr"]).first
        affinity = (block.get("affinity") or "none").removeprefix("host:")
        allocated.setdefault(affinity, set()).update({
            str(IPAddress(first + n)) for n, used in enumerate(block["allocations"])
            if used is not None})
    wrong = {}
    for host in swarm.hosts:
        want = running[host.name]
        held = {"endpoints": endpoints[host.name], "addresses": allocated[host.name],
                "cali links": len(cali_links(host))}
        wanted = {"endpoints": want, "addresses": want, "cali links": len(want)}
        wrong[host.name] = {k: (held[k], wanted[k]) for k in held if held[k] != wanted[k]}
    handles = len(keys(swarm, HANDLE_PREFIX))
    if handles != sum(map(len, running.values())):
        wrong["handles"] = (handles, sum(map(len, running.values())))
    return {k: v for k, v in wrong.items() if v}


def assert_calico_equals_the_containers(swarm, timeout=30):
    assert wait_until(lambda: not calico_mismatches(swarm), timeout, 0.5), \
        f"{calico_mismatches(swarm)}\n{swarm.logs()}"


def all_tasks(swarm, service):
    return {name for names in swarm.tasks(service).values() for name in names}


def node_id(host):
    return docker(host, "info", "-f", "{{.Swarm.NodeID}}")


def assert_web_serves(swarm, plain, converge=NAMES_CONVERGE):
    """web's tasks reach each other and are reached from the plain container
    on net1 (net1's profile allows it), and `web` resolves to them (within
    `converge` seconds: swarm's gossip, not Calico, carries these names)."""
    tasks = swarm.task_addresses("web", "net1")
    nodes = [reach.container(host, task, "net1") for task, (host, _) in tasks.items()]
    first = {node.host.name: node for node in nodes}
    assert_reach([(src, dst, "icmp", True) for src in (plain, *first.values())
                  for dst in nodes if src is not dst])
    wait_resolves(plain.host, plain.name, "web", {address for _, address in tasks.values()},
                  converge)


def test_service_update_force_replaces_every_task_leaving_nothing(swarm, web, db, plain):
    before = all_tasks(swarm, "web")
    docker(swarm.manager, "service", "update", "--detach", "--force",
           "--update-parallelism", "3", "web")

    def replaced():
        now = all_tasks(swarm, "web")
        return len(now) == WEB_REPLICAS and not now & before
    assert wait_until(replaced, 90, 0.5), \
        f"web's tasks not all replaced: {swarm.tasks('web')}\n{swarm.logs()}"
    assert_calico_equals_the_containers(swarm)


def test_drain_moves_tasks_and_the_networks_profiles_serve_the_other_nodes(swarm, web, db,
                                                                          plain):
    """Drained, h2's last tasks leave, so its dockerd deletes net1 and net2
    there (DeleteNetwork): the networks' Profiles stay for the tasks on the
    other nodes, which still reach each other and resolve web's name."""
    h2 = swarm.host("h2")
    spread_onto(swarm, h2)
    node = node_id(h2)
    docker(swarm.manager, "node", "update", "--availability", "drain", node)
    try:
        assert wait_until(lambda: not (swarm.tasks("web")[h2] or swarm.tasks("db")[h2]),
                          60, 0.5), f"tasks stay on h2: {swarm.tasks('web')}"
        swarm.wait_running("web", WEB_REPLICAS)
        swarm.wait_running("db", 2)
        assert wait_until(lambda: not {"net1", "net2"} & set(
            h2.docker("network", "ls", "--format", "{{.Name}}").stdout.split()), 30, 0.5)
        assert_calico_equals_the_containers(swarm)
        for network in ("net1", "net2"):
            assert swarm.etcd.get(PROFILE_PREFIX + network) is not None, \
                f"{network}'s Profile went with h2's DeleteNetwork\n{swarm.logs()}"
        assert_web_serves(swarm, plain)
    finally:
        docker(swarm.manager, "node", "update", "--availability", "active", node)
    assert wait_until(lambda: docker(swarm.manager, "node", "inspect", "-f",
                                     "{{.Spec.Availability}}", node) == "active", 10, 0.2)
    assert_calico_equals_the_containers(swarm)


def test_a_node_without_the_plugin_keeps_its_tasks_pending_until_it_is_enabled(swarm, web):
    """What `docker service ps` shows for a task only a node without the
    plugin may run (h2, which runs no task since its drain): swarm's
    scheduler keeps it pending with "missing plugin on 1 node", and runs it
    once the plugin is enabled there. The manager learns of a node's plugins
    only when the node next reports them, so each step waits for it."""
    h2 = swarm.host("h2")
    node = node_id(h2)

    def manager_sees_plugin():
        return PLUGIN in docker(swarm.manager, "node", "inspect", "-f",
                                "{{range .Description.Engine.Plugins}}{{.Name}} {{end}}",
                                node).split()
    docker(h2, "plugin", "disable", PLUGIN)
    try:
        assert wait_until(lambda: not manager_sees_plugin(), 60, 0.5)
        docker(swarm.manager, "service", "create", "--detach", "--name", "lonely", "--network",
               "net1", "--endpoint-mode", "dnsrr", "--constraint", f"node.id=={node}",
               swarm.image, "sleep", "86400")
        error = task_error(swarm, "lonely")
        assert ("no suitable node (scheduling constraints not satisfied on 2 nodes; "
                "missing plugin on 1 node)") in error, error
        state = docker(swarm.manager, "service", "ps", "--format", "{{.CurrentState}}", "lonely")
        assert state.startswith("Pending"), state
    finally:
        docker(h2, "plugin", "enable", PLUGIN)
    try:
        swarm.wait_running("lonely", 1)
        assert swarm.tasks("lonely")[h2], swarm.tasks("lonely")
        assert_calico_equals_the_containers(swarm)
    finally:
        swarm.remove_service("lonely")


def test_the_leaders_dockerd_restart_leaves_every_node_equal_to_its_tasks(swarm, web, db,
                                                                           plain):
    """h1, the only manager, stops with its tasks and the plugin, and starts
    again: swarm runs web and db again, and every node holds what its
    running tasks do, nothing of the stopped ones."""
    h1 = swarm.manager
    assert swarm.tasks("web")[h1] or swarm.tasks("db")[h1], \
        f"h1 runs no task: {swarm.tasks('web')}"
    h1.stop()
    h1.start()
    swarm.wait_running("web", WEB_REPLICAS, timeout=120)
    swarm.wait_running("db", 2)
    assert_calico_equals_the_containers(swarm, timeout=60)
    assert_web_serves(swarm, plain, NAMES_AFTER_RESTART)


PUBLISHED = 8088


def test_a_service_published_in_host_mode_answers_on_its_nodes_port(swarm, web):
    """`--publish mode=host` (the routing mesh needs overlay): the node that
    runs the task answers on the published port, from another node too, and
    no longer once the service is gone."""
    h1, h2 = swarm.manager, swarm.host("h2")
    client = reach.host_node(h1, ADDRESSES["h1"])
    swarm.create_service("pub", "net1", 1, "--endpoint-mode", "dnsrr",
                         "--constraint", f"node.id=={node_id(h2)}",
                         "--publish", f"mode=host,target={PORT},published={PUBLISHED}")
    try:
        (task, (host, _)), = swarm.task_addresses("pub", "net1").items()
        assert host is h2
        reach.serve(reach.container(h2, task, "net1"), (PORT,))
        assert wait_until(lambda: reach.probe(client, ADDRESSES["h2"], "tcp", PUBLISHED,
                                              timeout=2), 15, 0.5)
    finally:
        swarm.remove_service("pub")
    assert wait_until(lambda: not reach.probe(client, ADDRESSES["h2"], "tcp", PUBLISHED,
                                              timeout=1), 30, 0.5)
    assert_calico_equals_the_containers(swarm)


def test_scale_down_and_service_rm_leave_nothing(swarm, web, db, plain):
    docker(swarm.manager, "service", "scale", "--detach", "web=2")
    swarm.wait_running("web", 2)
    assert wait_until(lambda: endpoints_match_tasks(swarm), 30, 0.5), swarm.logs()

    docker(plain.host, "rm", "-f", plain.name)
    swarm.remove_service("web")
    swarm.remove_service("db")

    def nothing_left():
        return (keys(swarm, WEP_PREFIX) == [] and keys(swarm, "/calico/ipam/v2/handle/") == []
                and all(cali_links(h) == [] for h in swarm.hosts))
    assert wait_until(nothing_left, 30, 0.5), (
        f"endpoints {keys(swarm, WEP_PREFIX)}, handles {keys(swarm, '/calico/ipam/v2/handle/')}, "
        f"links { {h.name: cali_links(h) for h in swarm.hosts} }\n{swarm.logs()}")
    # Each node's dockerd deleted net1 and net2 as its last task left; the
    # last to do so found no endpoint on them and took their Profiles.
    assert wait_until(lambda: not keys(swarm, PROFILE_PREFIX), 30, 0.5), \
        f"{keys(swarm, PROFILE_PREFIX)}\n{swarm.logs()}"
