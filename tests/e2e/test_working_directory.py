"""Issue 18, part 3: `calico-libnetwork run` (root) and the node agent it
starts import only the installed package, never what lies in the directory
they were started from.  The plugin runs from a directory holding
booby-trapped `plugin/`, `agent/`, `driver/`, `ipam/`, `datastore/`, `kernel/`
packages and a `json.py`, each of which writes a marker when imported."""

import subprocess
from pathlib import Path

import pytest

from tests.e2e.calico_host import (CALICO, ENTRY_POINT, docker, in_host, remove_all,
                                   start_plugin, wait_for)

pytestmark = [pytest.mark.slow, pytest.mark.require_root]

TRAPPED = ("plugin", "plugin/cli", "agent", "driver", "ipam", "datastore", "kernel")


def plant_traps(folder: Path, marker: Path) -> None:
    trap = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for package in TRAPPED:
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text(trap)
    (folder / "json.py").write_text(trap)  # a standard-library name too


@pytest.fixture(scope="module")
def trapped(docker_host, tmp_path_factory):
    folder = tmp_path_factory.mktemp("caller-cwd")
    marker = tmp_path_factory.mktemp("marker") / "imported"
    plant_traps(folder, marker)
    docker_host.plugin = start_plugin(docker_host, command=("env", "-C", folder, ENTRY_POINT))
    yield docker_host, marker
    remove_all(docker_host)


def agent_pids(plugin) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(plugin.pid), "-f", "plugin.cli agent"],
                          capture_output=True, text=True).stdout.split()


def test_plugin_and_agent_run_without_importing_the_callers_directory(trapped):
    host, marker = trapped
    # The agent is up (its policy table is in the host), or ran foreign code.
    wait_for(lambda: marker.exists()
             or "table inet calico-libnetwork" in in_host(host, ["nft", "list", "tables"]),
             60, "the node agent's policy table")
    assert not marker.exists(), f"imported from the caller's directory: {marker.read_text()}"
    docker(host, "network", "create", *CALICO, "net1")
    docker(host, "run", "-tid", "--net", "net1", "--name", "workload-A", "busybox")
    docker(host, "run", "-tid", "--net", "net1", "--name", "workload-B", "busybox")
    ping = host.docker("exec", "workload-A", "ping", "-c", "1", "-W", "5", "workload-B")
    assert ping.returncode == 0, host.plugin.log_tail()
    assert host.plugin.running and agent_pids(host.plugin), host.plugin.log_tail()
    assert not marker.exists(), f"imported from the caller's directory: {marker.read_text()}"
