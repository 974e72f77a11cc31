"""A rolling upgrade from the previous release to this tree, in the lab of
tests/e2e/names_lab.py (two Docker hosts, one etcd): both hosts start on
PREVIOUS_RELEASE with containers running on both; h1 is upgraded (the
versions mixed: routing both ways, unique addresses, isolation, names), then
h2; the containers started before the upgrade then resolve by name from
old and new containers on either host, and their removal releases their
addresses.

The previous release is extracted from this repository's own history (CI
clones main with it).  Before the upgrade the DNS names it wrote are
stripped from the WorkloadEndpoints, standing in for the releases that wrote
none (68fb88e, the first): the upgraded plugin must write them for the
containers that kept running.
"""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from driver import endpoints as ep
from tests.e2e.calico_host import (REPO, WEP_PREFIX, calicoctl, container_ip, docker,
                                   endpoint_id, start_plugin)
from tests.e2e.names_lab import LINK, machine_nameserver, names_lab
from tests.lab.common import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

# The release users upgrade from: the last one landed on main.  Move it on
# when a release lands, so every change of what is stored is tried this way.
PREVIOUS_RELEASE = "c42ec66ca9f9a2a62db83fefe7e0536e6edcc1de"

OLD = {"h1": ("old-a", "old-b"), "h2": ("old-e", "old-f")}  # on net1, net2


def extract(commit) -> Path:
    """The release's source tree in a new folder; fails (never skips) when
    the repository does not have the commit (a shallow clone)."""
    where = Path(tempfile.mkdtemp(prefix=f"release-{commit[:7]}-"))
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", commit],
                             capture_output=True)
    if archive.returncode:
        shutil.rmtree(where)
        raise AssertionError(
            f"cannot extract the previous release {commit} from {REPO}: "
            f"{archive.stderr.decode().strip()}; the upgrade test needs the repository's "
            "history (git fetch --unshallow)")
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


@pytest.fixture(scope="module")
def old_tree():
    tree = extract(PREVIOUS_RELEASE)
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(docker_host_factory, old_tree):
    nameserver = machine_nameserver()
    assert nameserver, "/etc/resolv.conf has no IPv4 non-loopback nameserver"
    with names_lab(docker_host_factory, nameserver, code=old_tree) as lab:
        lab.old_tree = old_tree
        lab.hosts = {"h1": lab.h1, "h2": lab.h2}
        yield lab


def run(host, name, net="net1"):
    docker(host, "run", "-tid", "--net", net, "--name", name, "busybox")
    return container_ip(host, name, net)


def pings(host, container, target):
    return host.docker("exec", container, "ping", "-c", "1", "-W", "2", target,
                       timeout=30).returncode == 0


def assert_pings(lab, host, container, target, timeout=15):
    if not wait_until(lambda: pings(host, container, target), timeout, 0.5):
        raise AssertionError(f"{container} on {host.name} cannot ping {target}\n"
                             + "\n".join(p.log_tail() for p in lab.plugins.values()))


def refused(host, container, target):
    return not pings(host, container, target)


def upgrade(lab, host):
    """Stop the host's plugin and its agent (as `systemctl stop`, SIGTERM),
    start this tree's."""
    old = lab.plugins[host.name]
    old.stop(timeout=30)
    old.kill()  # anything of its process group left
    lab.plugins[host.name] = host.plugin = start_plugin(host, IP=f"{LINK[host.name]}/24")


def names_of(lab, host, container, net="net1"):
    """The DNS names on the container's WorkloadEndpoint (None: none)."""
    key = WEP_PREFIX + ep.wep_name(host.name, endpoint_id(host, container, net))
    notes = json.loads(lab.h1.etcd.get(key))["metadata"].get("annotations", {})
    return json.loads(notes.get(ep.DNS_NAMES_ANNOTATION, "null"))


def strip_names(lab):
    """Remove the DNS names and network names the old release wrote: what a
    release that wrote none left (a compare-and-swap per endpoint)."""
    etcd = lab.h1.etcd
    for key in etcd.ctl("get", "--prefix", "--keys-only", WEP_PREFIX).stdout.split():
        record = json.loads(etcd.get(key))
        notes = record["metadata"].get("annotations", {})
        for name in (ep.DNS_NAMES_ANNOTATION, ep.NETWORK_NAME_ANNOTATION):
            notes.pop(name, None)
        etcd.put(key, json.dumps(record))


def addresses_in_use(host):
    report = json.loads(calicoctl(host, "ipam", "show", "-o", "json").stdout)
    return sum(pool["inUse"] for pool in report["pools"])


def assert_unique(lab, containers):
    """containers: (host, name, net); their addresses differ."""
    seen = [container_ip(lab.hosts[h], name, net) for h, name, net in containers]
    assert len(set(seen)) == len(seen), f"addresses reused: {seen}"


def test_the_old_release_runs_with_containers_on_both_hosts(lab):
    h1, h2 = lab.h1, lab.h2
    for host, (on_net1, on_net2) in OLD.items():
        run(lab.hosts[host], on_net1)
        run(lab.hosts[host], on_net2, "net2")
    assert_pings(lab, h1, "old-a", container_ip(h2, "old-e", "net1"))
    assert_pings(lab, h2, "old-e", container_ip(h1, "old-a", "net1"))
    assert wait_until(lambda: names_of(lab, h1, "old-a") and names_of(lab, h2, "old-e"),
                      15, 0.5), "the previous release wrote no names"
    strip_names(lab)
    assert names_of(lab, h1, "old-a") is None and names_of(lab, h2, "old-e") is None


def test_mixed_versions(lab):
    h1, h2 = lab.h1, lab.h2
    upgrade(lab, h1)
    # The upgraded plugin names the containers that kept running.
    assert wait_until(lambda: names_of(lab, h1, "old-a") and names_of(lab, h1, "old-b", "net2"),
                      30, 0.5), f"no names after the upgrade:\n{lab.plugins['h1'].log_tail()}"
    assert "old-a" in names_of(lab, h1, "old-a")
    assert names_of(lab, h2, "old-e") is None  # h2 still runs the previous release
    ip_a, ip_e = container_ip(h1, "old-a", "net1"), container_ip(h2, "old-e", "net1")
    new_a, new_e = run(h1, "new-a"), run(h2, "new-e")  # one per version
    assert_pings(lab, h1, "old-a", ip_e)
    assert_pings(lab, h2, "old-e", ip_a)
    assert_pings(lab, h1, "new-a", new_e)
    assert_pings(lab, h2, "new-e", new_a)
    assert_unique(lab, [("h1", "old-a", "net1"), ("h1", "old-b", "net2"),
                        ("h2", "old-e", "net1"), ("h2", "old-f", "net2"),
                        ("h1", "new-a", "net1"), ("h2", "new-e", "net1")])
    # Isolation by the upgraded host, for a container it did not start.
    assert refused(h2, "old-f", ip_a)
    # Names: the old container of the upgraded host, across hosts, from the
    # host still on the previous release (its agent answers names too).
    assert_pings(lab, h2, "old-e", "old-a")
    assert_pings(lab, h2, "new-e", "old-a")
    assert_pings(lab, h1, "new-a", "new-e")  # named by the previous release at Join


def test_after_the_upgrade_old_containers_have_names_everywhere(lab):
    h1, h2 = lab.h1, lab.h2
    upgrade(lab, h2)
    assert wait_until(lambda: names_of(lab, h2, "old-e"), 30, 0.5), \
        f"old-e has no names after the upgrade:\n{lab.plugins['h2'].log_tail()}"
    run(h1, "newer-a")
    run(h2, "newer-e")
    for host, container in ((h1, "old-a"), (h1, "new-a"), (h1, "newer-a")):
        assert_pings(lab, host, container, "old-e")
    for host, container in ((h2, "old-e"), (h2, "new-e"), (h2, "newer-e")):
        assert_pings(lab, host, container, "old-a")
    assert_pings(lab, h2, "old-f", "old-b")  # net2's names too
    failed = h2.docker("exec", "old-f", "ping", "-c", "1", "-W", "1", "old-a")
    assert failed.returncode and "bad address" in failed.stderr + failed.stdout
    assert refused(h2, "old-f", container_ip(h1, "old-a", "net1"))
    # Removing the old containers releases their addresses.
    before = addresses_in_use(h1)
    removed = [container_ip(h1, "old-a", "net1"), container_ip(h2, "old-e", "net1")]
    docker(h1, "rm", "-f", "old-a")
    docker(h2, "rm", "-f", "old-e")
    assert wait_until(lambda: addresses_in_use(h1) == before - 2, 15, 0.5), \
        f"{removed} still allocated"
    # A new container may take a released address: none is held twice.
    run(h1, "last-a")
    assert_unique(lab, [("h1", c, "net1") for c in ("new-a", "newer-a", "last-a")]
                  + [("h2", c, "net1") for c in ("new-e", "newer-e")])
