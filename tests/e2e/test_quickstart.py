"""The README's quick start, literally, on this machine: the command it
shows, then the commands it says work afterwards.

This one runs in the machine's own network namespace (as a user would),
with the system's dockerd on /var/run/docker.sock and the plugin on
/run/docker/plugins; everything it starts is stopped at the end.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.lab.images import import_busybox

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

REPO = Path(__file__).resolve().parents[2]
DOCKER = "/usr/bin/docker"


def readme_quickstart_command():
    """The first command in the README's Quick start section."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.search(r"^    (sudo bash scripts/quickstart\.sh)$", section, re.M).group(1)


class SystemDocker:
    """The machine's dockerd, through Debian's CLI (the shape lab hosts have)."""

    def docker(self, *args, check=False, input=None, timeout=120):
        result = subprocess.run([DOCKER, *map(str, args)], capture_output=True, text=True,
                                input=input, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"docker {' '.join(map(str, args))}: {result.stderr}")
        return result


@pytest.fixture
def quickstart():
    if SystemDocker().docker("info").returncode == 0 or os.path.exists("/run/systemd/system"):
        pytest.skip("a system dockerd or systemd is already running here; the quick "
                    "start test wants a machine of its own (as CI has)")
    command = readme_quickstart_command().removeprefix("sudo ")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETCD", "CALICO", "DOCKER", "NODENAME"))}
    try:
        result = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        yield SystemDocker()
    finally:
        docker = SystemDocker()
        ids = docker.docker("ps", "-aq").stdout.split()
        if ids:
            docker.docker("rm", "-f", *ids)
        docker.docker("network", "rm", "qs-net1")
        subprocess.run(["bash", "scripts/quickstart.sh", "stop"], cwd=REPO, timeout=120)
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)


def test_quickstart_then_the_docs_commands(quickstart):
    docker = quickstart
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
