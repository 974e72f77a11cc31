"""End to end on one Docker host: a real dockerd (Debian 12's 20.10, or the
engine LAB_DOCKER picks), the plugin on its real sockets, a real etcd,
busybox containers.  The scenario and checks of Calico's Docker docs and of
Calico's own plugin tests."""

import json
import re

import pytest
import yaml

from tests.e2e import reach
from tests.e2e.calico_host import (CALICO, IPV4_POOL, IPV6_POOL, POLICY_TABLE, PROFILE_PREFIX,
                                   WEP_PREFIX, agent_run_dir, calicoctl, container_ip, docker,
                                   docker_fails, endpoint_id, in_host, keys, nft_tables,
                                   remove_all, start_plugin, wait_for, wep)

pytestmark = [pytest.mark.slow, pytest.mark.require_root]



def calico_routes(ifname):
    return [f"default via 169.254.1.1 dev {ifname}", f"169.254.1.1 dev {ifname} scope link"]


def routes_of(host, container, *flags):
    out = docker(host, "exec", container, "ip", *flags, "route")
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def host(docker_host):
    plugin = start_plugin(docker_host)
    docker_host.plugin = plugin
    yield docker_host
    remove_all(docker_host)


@pytest.fixture
def clean(host):
    yield host
    remove_all(host)


def run(host, name, network, *extra):
    return docker(host, "run", "-tid", "--net", network, "--name", name, *extra, "busybox")


def ping(host, container, target, count=2, v6=False):
    cmd = (["exec", container, "ping"] + (["-6"] if v6 else [])
           + ["-c", str(count), "-W", "2", target])
    return host.docker(*cmd)


def host_ifname(endpoint):
    return "cali" + endpoint[:11]


# -- the docs scenario -----------------------------------------------------

def test_docs_scenario(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "net1")
    run(host, "workload-A", "net1")
    run(host, "workload-C", "net1")
    assert ping(host, "workload-A", "workload-C").returncode == 0
    ip_c = container_ip(host, "workload-C", "net1")
    assert ip_c.startswith("192.169.")
    assert ping(host, "workload-A", ip_c).returncode == 0

    # Inside the container: the /32, the MAC, Calico's two routes.
    addr = docker(host, "exec", "workload-C", "ip", "addr", "show", "cali0")
    assert f"inet {ip_c}/32" in addr
    assert "ee:ee:ee:ee:ee:ee" in addr
    assert routes_of(host, "workload-C") == calico_routes("cali0")

    # On the host: the cali interface and the /32 route to the container.
    endpoint = endpoint_id(host, "workload-C", "net1")
    ifname = host_ifname(endpoint)
    assert ifname in in_host(host, ["ip", "-br", "link", "show", ifname])
    route = in_host(host, ["ip", "route", "show", ip_c])
    assert re.match(rf"{ip_c} dev {ifname} .*scope link", route)
    assert in_host(host, ["cat", f"/proc/sys/net/ipv4/conf/{ifname}/proxy_arp"]).strip() == "1"

    # In etcd: the WorkloadEndpoint and the network's Profile.
    record = wep(host, endpoint)
    assert record["spec"]["ipNetworks"] == [f"{ip_c}/32"]
    assert record["spec"]["interfaceName"] == ifname
    assert record["spec"]["mac"] == "ee:ee:ee:ee:ee:ee"
    assert record["spec"]["profiles"] == ["net1"]
    assert record["spec"]["node"] == host.name
    profile = json.loads(host.etcd.get(PROFILE_PREFIX + "net1"))
    assert profile["spec"]["labelsToApply"] == {"net1": ""}
    assert profile["spec"]["ingress"][0]["source"] == {"selector": "has(net1)"}


def test_cleanup_after_rm_and_network_rm(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "gone")
    run(host, "short-lived", "gone")
    ip = container_ip(host, "short-lived", "gone")
    endpoint = endpoint_id(host, "short-lived", "gone")
    docker(host, "rm", "-f", "short-lived")
    docker(host, "network", "rm", "gone")
    assert host_ifname(endpoint) not in in_host(host, ["ip", "-br", "link"])
    assert in_host(host, ["ip", "route", "show", ip]).strip() == ""
    assert wep(host, endpoint) is None
    assert keys(host, PROFILE_PREFIX + "gone") == []
    assert keys(host, "/calico/ipam/v2/handle/") == []
    assert keys(host, "/calico/libnetwork/v1/networks/") == []
    assert keys(host, "/calico/libnetwork/v1/sandboxes/") == []
    # The block stays (this host's affinity) but holds no address.
    for key in keys(host, "/calico/ipam/v2/assignment/"):
        block = json.loads(host.etcd.get(key))
        assert all(a is None for a in block["allocations"]), key


# -- docker run options ----------------------------------------------------

def test_specific_mac(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "macnet")
    run(host, "mac", "macnet", "--mac-address", "00:22:33:44:55:66")
    assert container_ip(host, "mac", "macnet", "MacAddress") == "00:22:33:44:55:66"
    assert "00:22:33:44:55:66" in docker(host, "exec", "mac", "ip", "link", "show", "cali0")
    assert wep(host, endpoint_id(host, "mac", "macnet"))["spec"]["mac"] == "00:22:33:44:55:66"


def test_subnet_network_and_specific_ip(clean):
    host = clean
    calicoctl(host, "pool", "create", "10.77.0.0/16", "--name", "pool-77")
    docker(host, "network", "create", *CALICO, "--subnet", "10.77.0.0/16", "subnet-net")
    run(host, "auto", "subnet-net")
    assert container_ip(host, "auto", "subnet-net").startswith("10.77.")
    run(host, "fixed", "subnet-net", "--ip", "10.77.50.51")
    assert container_ip(host, "fixed", "subnet-net") == "10.77.50.51"
    assert ping(host, "auto", "10.77.50.51").returncode == 0
    # The same address twice is refused, with the reason.
    err = docker_fails(host, "run", "-d", "--net", "subnet-net", "--ip", "10.77.50.51",
                       "busybox", "sleep", "60")
    assert "10.77.50.51" in err and "in use" in err.lower()


def test_ipv6(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "--ipv6", "net6")
    run(host, "v6-a", "net6")
    run(host, "v6-b", "net6")
    ip6_b = container_ip(host, "v6-b", "net6", "GlobalIPv6Address")
    assert ip6_b.startswith(IPV6_POOL.split("::")[0])
    assert ping(host, "v6-a", ip6_b, v6=True).returncode == 0
    assert any(re.match(r"default via fe80::1 dev cali0", r) for r in routes_of(host, "v6-b", "-6"))
    endpoint = endpoint_id(host, "v6-b", "net6")
    nets = wep(host, endpoint)["spec"]["ipNetworks"]
    assert nets[1] == f"{ip6_b}/128"
    assert f"{ip6_b} dev {host_ifname(endpoint)}" in in_host(
        host, ["ip", "-6", "route", "show", ip6_b])


# -- refusals (Calico's plugin tests 1-8) --------------------------------------

@pytest.mark.parametrize("args, message", [
    (("--driver", "calico"), "Non-Calico IPAM driver is used"),
    (CALICO + ("--subnet", IPV4_POOL, "--gateway", "192.169.0.1"),
     "Calico IPAM does not support specifying a gateway."),
    (CALICO + ("--subnet", "192.169.0.0/24"),
     "The requested subnet must match the CIDR of a configured Calico IP Pool."),
    (CALICO + ("--internal",), "Calico driver does not support the flag --internal."),
    (CALICO + ("--subnet", IPV4_POOL, "--ip-range", "192.169.1.0/24"),
     "Calico IPAM does not support sub pool configuration"),
    (CALICO + ("--ipam-opt", "a=b"), "Arbitrary options are not supported"),
    (CALICO + ("--opt", "REJECT"), "Calico driver does not support the flag REJECT."),
    (CALICO + ("--opt", "REJECT", "--opt", "REJECT2"),
     "Calico driver does not support the flags REJECT, REJECT2."),
])
def test_network_create_refusals(host, args, message):
    err = docker_fails(host, "network", "create", *args, "refused")
    assert message in err
    assert keys(host, "/calico/libnetwork/v1/networks/") == []


def test_second_calico_network_is_refused_clearly(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "first")
    docker(host, "network", "create", *CALICO, "second")
    run(host, "multi", "first")
    err = docker_fails(host, "network", "connect", "second", "multi")
    assert "only one Calico network" in err
    # The container still works on its first network, nothing leaked.
    assert routes_of(host, "multi") == calico_routes("cali0")
    assert len(keys(host, WEP_PREFIX)) == 1


def test_removing_a_legacy_link_keeps_the_calico_interface(clean):
    """`docker rm --link` makes dockerd Leave and Join the parent's Calico
    endpoint again (Sandbox.Refresh), keeping the first Join's routes: a
    second set of static routes failed with "file exists" and dockerd took
    the Calico interface away."""
    host = clean
    docker(host, "network", "create", *CALICO, "linked")
    run(host, "peer", "linked")
    docker(host, "run", "-tid", "--name", "child", "busybox")
    docker(host, "run", "-tid", "--name", "parent", "--link", "child", "busybox")
    docker(host, "network", "connect", "linked", "parent")
    address = container_ip(host, "parent", "linked")
    assert ping(host, "peer", address).returncode == 0
    docker(host, "rm", "--link", "/parent/child")
    assert address in docker(host, "exec", "parent", "ip", "addr")
    assert ping(host, "peer", address).returncode == 0
    assert len(keys(host, WEP_PREFIX)) == 2


# -- restarts ---------------------------------------------------------------

def test_plugin_killed_and_restarted(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "sturdy")
    run(host, "before-1", "sturdy")
    run(host, "before-2", "sturdy")
    host.plugin.kill()
    host.plugin = start_plugin(host)
    assert ping(host, "before-1", "before-2").returncode == 0
    run(host, "after", "sturdy")
    assert ping(host, "after", "before-1").returncode == 0
    docker(host, "rm", "-f", "before-1")  # teardown reaches the new instance
    assert len(keys(host, WEP_PREFIX)) == 2


def test_dockerd_restart_brings_back_restart_always_containers(clean):
    host = clean
    docker(host, "network", "create", *CALICO, "durable")
    run(host, "always-1", "durable", "--restart=always")
    run(host, "always-2", "durable", "--restart=always")
    host.restart()
    wait_for(lambda: host.docker("inspect", "-f", "{{.State.Running}}", "always-2")
             .stdout.strip() == "true", 60, "always-2 to run again")
    wait_for(lambda: ping(host, "always-1", "always-2", count=1).returncode == 0, 30,
             "always-1 to reach always-2")
    # One endpoint per running container, nothing stale left from before.
    assert len(keys(host, WEP_PREFIX)) == 2


# -- environment options ----------------------------------------------------

def test_ifprefix_mtu_and_labels(clean):
    host = clean
    host.plugin.stop()
    host.plugin = start_plugin(host, CALICO_LIBNETWORK_IFPREFIX="test",
                               CALICO_LIBNETWORK_LABEL_ENDPOINTS="true",
                               CALICO_LIBNETWORK_VETH_MTU="1400")
    try:
        docker(host, "network", "create", *CALICO, "labelled")
        run(host, "lab", "labelled", "--label", "not=expected",
            "--label", "org.projectcalico.label.foo=bar",
            "--label", "org.projectcalico.label.baz=quux")
        assert routes_of(host, "lab") == calico_routes("test0")
        assert "mtu 1400" in docker(host, "exec", "lab", "ip", "link", "show", "test0")
        endpoint = endpoint_id(host, "lab", "labelled")
        assert "mtu 1400" in in_host(host, ["ip", "link", "show", host_ifname(endpoint)])
        assert wep(host, endpoint)["spec"]["interfaceName"] == host_ifname(endpoint)
        wait_for(lambda: wep(host, endpoint)["metadata"].get("labels", {}).get("foo") == "bar",
                 10, "endpoint labels")
        labels = wep(host, endpoint)["metadata"]["labels"]
        assert labels["baz"] == "quux" and "not" not in labels
    finally:
        remove_all(host)
        host.plugin.stop()
        host.plugin = start_plugin(host)


# -- policy ----------------------------------------------------------------

# The GlobalNetworkPolicy of Calico's labels tutorial (corrected to v3 case).
DATABASE_POLICY = {
    "apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
    "metadata": {"name": "database"},
    "spec": {"order": 0, "selector": "role == 'database'",
             "ingress": [{"action": "Allow", "protocol": "TCP",
                          "source": {"selector": "role == 'frontend'"},
                          "destination": {"ports": [3306]}}]}}


def test_container_labels_select_policy(clean):
    """Calico's "Docker labels and Calico policy" tutorial: container labels
    become endpoint labels, and a GlobalNetworkPolicy on them admits the
    frontend to the database on TCP 3306 and nothing else."""
    host = clean
    host.plugin.stop()
    host.plugin = start_plugin(host, CALICO_LIBNETWORK_LABEL_ENDPOINTS="true")
    policy = host.dir / "database-policy.yaml"
    policy.write_text(yaml.safe_dump(DATABASE_POLICY))
    try:
        docker(host, "network", "create", *CALICO, "shop")
        for name, role in (("frontend-a", "frontend"), ("database-a", "database")):
            run(host, name, "shop", "--label", f"org.projectcalico.label.role={role}")
        run(host, "other", "shop")
        database = endpoint_id(host, "database-a", "shop")
        wait_for(lambda: wep(host, database)["metadata"]["labels"].get("role") == "database",
                 10, "the database's endpoint label")
        calicoctl(host, "apply", "-f", str(policy))
        db = reach.workload(host, "database-a", "shop", [3306])
        frontend, other = (reach.container(host, n, "shop") for n in ("frontend-a", "other"))
        wait_for(lambda: reach.probe(frontend, db, "tcp", 3306), 5, "frontend to reach 3306")
        assert reach.mismatches([(frontend, db, "tcp", True), (other, db, "tcp", False),
                                 (frontend, db, "icmp", False), (other, frontend, "icmp", True)],
                                3306) == []
    finally:
        calicoctl(host, "delete", "globalnetworkpolicy", "database", check=False)
        remove_all(host)
        host.plugin.stop()
        host.plugin = start_plugin(host)


def test_policy_off_leaves_networks_flat_and_no_table(clean):
    host = clean
    status_file = agent_run_dir(host) / f"policy-{host.name}.json"
    wait_for(status_file.exists, 20, "the agent with policy on to write its policy status")
    host.plugin.stop()
    host.plugin = start_plugin(host, CALICO_LIBNETWORK_POLICY="false")
    try:
        wait_for(lambda: POLICY_TABLE not in nft_tables(host), 20, "the policy table to go")
        docker(host, "network", "create", *CALICO, "flat1")
        docker(host, "network", "create", *CALICO, "flat2")
        run(host, "flat-a", "flat1")
        run(host, "flat-b", "flat2")
        assert ping(host, "flat-a", container_ip(host, "flat-b", "flat2")).returncode == 0
        # Its agent says policy is off in its status file, so `status` run
        # without the variable (policy on, as far as it knows) tells it.
        wait_for(lambda: json.loads(status_file.read_text()) == {"enabled": False}, 20,
                 "the agent with policy off to say so in its status file")
        report = json.loads(calicoctl(host, "status", "-o", "json", check=False).stdout)
        assert report["policy"] == {"enabled": False}
    finally:
        remove_all(host)
        host.plugin.stop()
        host.plugin = start_plugin(host)
