"""The README's quick start, literally, on this machine: the command it
shows, as the README writes it for root, then the commands it says work
afterwards; on Debian 12's dockerd 20.10 and on dockerd 28, where the quick
start also puts 169.254.1.1 first in daemon.json's `dns`, merged with what
the file already holds.

This one runs in the machine's own network namespace (as a user would),
with the quick start's dockerd on /var/run/docker.sock and the plugin on
/run/docker/plugins; everything it starts is stopped at the end, and what
they changed is put back: daemon.json, and the namespace's nftables ruleset
(iptables-nft's tables included), forwarding switches and routes.  A
dockerd the machine already runs would be the one the quick start uses, and
its containers and docker0 are not this test's to remove: the test needs a
machine without one (as CI is: deps.sh installs docker.io without starting
it).  Where systemd runs, the quick start runs in a mount namespace of its
own that hides /run/systemd/system, so it starts its daemons in the
background instead of installing services on the machine running the
tests; its systemd branch is not run here.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.lab.dockerd import engine_root
from tests.lab.images import import_busybox

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

REPO = Path(__file__).resolve().parents[2]
DAEMON_JSON = Path("/etc/docker/daemon.json")
SYSTEMD = "/run/systemd/system"  # what the quick start (and sd_booted) looks for
# What a user on dockerd 28 may already have in daemon.json: the quick start
# must keep it.  Its own data-root keeps dockerd 28 off the data of Debian's
# 20.10 (an engine must not be downgraded on its data).
DATA_ROOT_28 = "/var/lib/calico-quickstart-docker-28"
USER_DAEMON_JSON = {"data-root": DATA_ROOT_28, "dns": ["192.0.2.53"]}  # TEST-NET-1


def readme_section(title):
    text = (REPO / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_command(title, pattern):
    """The first indented line of the README section `title` matching pattern."""
    found = re.search(rf"^    ({pattern})\s*(#.*)?$", readme_section(title), re.M)
    assert found, f"README.md's {title} section shows no command like {pattern!r}"
    return found.group(1)


def test_readme_commands_are_the_ones_that_run():
    """The quick start's command is the one run below, with its sudo form
    beside it; the test command is what CI runs (.ci/run) and what the
    Development section starts with."""
    quickstart = readme_command("Quick start", r"bash scripts/quickstart\.sh")
    assert f"`sudo {quickstart}`" in readme_section("Quick start")
    test = readme_command("Quick start", r"bash scripts/test\.sh")
    assert f"exec {test}\n" in (REPO / ".ci/run").read_text()
    assert readme_command("Development", r"\S.*?") == test
    assert "sudo" not in "".join(re.findall(r"^    .*$", readme_section("Development"), re.M))


class SystemDocker:
    """The quick start's dockerd, through the engine's CLI (the shape lab hosts have)."""

    def __init__(self, cli="/usr/bin/docker"):
        self.cli = cli

    def docker(self, *args, check=False, input=None, timeout=120):
        result = subprocess.run([self.cli, *map(str, args)], capture_output=True, text=True,
                                input=input, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"docker {' '.join(map(str, args))}: {result.stderr}")
        return result


def without_systemd(command):
    """argv running the shell command `command`; where systemd runs, in a mount
    namespace of its own (the daemons started inherit it) with an empty
    /run/systemd, so that SYSTEMD is not there."""
    if not os.path.isdir(SYSTEMD):
        return ["bash", "-c", command]
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c",
            f"mount -t tmpfs quickstart-no-systemd {os.path.dirname(SYSTEMD)} && {command}"]


class RootNamespace:
    """This machine's network namespace as it was: dockerd, the plugin and its
    agent add firewall rules, switch forwarding on and add routes there."""

    SWITCHES = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")

    def __init__(self):
        self.ruleset = self._run("nft", "list", "ruleset")
        self.switches = {path: Path(path).read_text() for path in self.SWITCHES}
        self.routes = self._routes()

    @staticmethod
    def _run(*argv, input=None):
        return subprocess.run(argv, input=input, capture_output=True, text=True,
                              check=True).stdout

    def _routes(self):
        return {(family, line) for family in ("-4", "-6")
                for line in self._run("ip", family, "route", "show", "table", "all").splitlines()}

    def restore(self):
        self._run("nft", "-f", "-", input="flush ruleset\n" + self.ruleset)
        for path, value in self.switches.items():
            Path(path).write_text(value)
        for family, line in self._routes() - self.routes:
            subprocess.run(["ip", family, "route", "del", *line.split()], capture_output=True)
        assert self._routes() <= self.routes, self._routes() - self.routes


def read_daemon_json():
    return json.loads(DAEMON_JSON.read_text()) if DAEMON_JSON.exists() else None


@pytest.fixture(params=["20.10", "28"], ids=["dockerd-20.10", "dockerd-28"])
def quickstart(request):
    """(engine, its docker CLI, daemon.json before and after the quick start)."""
    if SystemDocker().docker("info").returncode == 0:
        pytest.skip("a dockerd already runs on this machine; the quick start test "
                    "wants one without (as CI has)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETCD", "CALICO", "DOCKER", "NODENAME"))}
    docker = SystemDocker()
    saved = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    root_namespace = RootNamespace()
    if request.param == "28":
        root = engine_root("28")  # fetched by scripts/deps.sh
        env["PATH"] = f"{root}/usr/sbin:{root}/usr/bin:{env['PATH']}"
        docker = SystemDocker(f"{root}/usr/bin/docker")
        DAEMON_JSON.parent.mkdir(exist_ok=True)
        DAEMON_JSON.write_text(json.dumps(USER_DAEMON_JSON))
    before = read_daemon_json()
    command = readme_command("Quick start", r"bash scripts/quickstart\.sh")
    try:
        result = subprocess.run(without_systemd(command), cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield request.param, docker, before, read_daemon_json()
    finally:
        ids = docker.docker("ps", "-aq").stdout.split()
        if ids:
            docker.docker("rm", "-f", *ids)
        docker.docker("network", "rm", "qs-net1")
        subprocess.run(["bash", "scripts/quickstart.sh", "stop"], cwd=REPO, timeout=120)
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)
        if saved is None:
            DAEMON_JSON.unlink(missing_ok=True)
        else:
            DAEMON_JSON.write_bytes(saved)
        shutil.rmtree(DATA_ROOT_28, ignore_errors=True)
        root_namespace.restore()


def test_quickstart_then_the_docs_commands(quickstart):
    engine, docker, before, after = quickstart
    if engine == "28":  # 169.254.1.1 first, the user's settings kept
        assert after == {**USER_DAEMON_JSON, "dns": ["169.254.1.1", "192.0.2.53"]}
        assert docker.docker("info", "-f", "{{.DockerRootDir}}").stdout.strip() == DATA_ROOT_28
    else:  # dockerd 20.10 sends its containers' questions to 169.254.1.1 itself
        assert after == before
    assert engine in docker.docker("version", "-f", "{{.Server.Version}}").stdout
    import_busybox(docker)
    created = docker.docker("network", "create", "--driver", "calico",
                            "--ipam-driver", "calico-ipam", "qs-net1")
    assert created.returncode == 0, created.stderr
    for name in ("qs-workload-a", "qs-workload-b"):
        ran = docker.docker("run", "--net", "qs-net1", "--name", name, "-tid", "busybox")
        assert ran.returncode == 0, ran.stderr
    ip = docker.docker("inspect", "-f",
                       '{{(index .NetworkSettings.Networks "qs-net1").IPAddress}}',
                       "qs-workload-b").stdout.strip()
    assert ip.startswith("192.168."), ip  # the default pool 192.168.0.0/16
    ping = docker.docker("exec", "qs-workload-a", "ping", "-c", "2", "-W", "2", "qs-workload-b")
    assert ping.returncode == 0, ping.stdout + ping.stderr
