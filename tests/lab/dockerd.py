"""One Docker host of the lab: a network namespace with a dockerd of its own.

dockerd runs in the host's namespace and in a private mount namespace in
which a per-host directory is bind-mounted on /run/docker/plugins, so each
dockerd finds only its own host's plugin sockets. Its containers, bridge and
iptables rules all live inside the namespace.

The engine is Debian 12's dockerd 20.10 and its CLI, unless LAB_DOCKER names
another one (engine_root): scripts/test.sh runs the end-to-end tests on
each engine of its matrix this way.
"""

import json
import os
import re
import shutil
import subprocess
from functools import partial
from pathlib import Path

import docker

from .common import (LabError, LabProcess, in_netns, remove_cgroups, run_all,
                     run_dir, wait_until)
from .etcd import EtcdServer
from .netns import Lab

PLUGINS = "/run/docker/plugins"  # where dockerd looks for plugin sockets
ENGINES = Path(os.environ.get("LAB_DOCKER_CACHE", "/opt/calico-libnetwork-test"))
COMPOSE_PLUGIN = "usr/libexec/docker/cli-plugins/docker-compose"


def engine_root(setting):
    """The folder holding the engine LAB_DOCKER names, or None for Debian
    12's own (dockerd 20.10 in /usr/sbin, its CLI in /usr/bin). LAB_DOCKER
    is empty (Debian 12's), an engine major version that
    scripts/docker-versions.sh fetched (`26` = ENGINES/docker-26) or such a
    folder (usr/sbin/dockerd, usr/bin/docker and Compose v2 in it)."""
    if not setting:
        return None
    root = ENGINES / f"docker-{setting}" if setting.isdigit() else Path(setting)
    if not (root / "usr/sbin/dockerd").exists():
        raise RuntimeError(f"LAB_DOCKER={setting}: no {root}/usr/sbin/dockerd"
                           f" (bash scripts/docker-versions.sh {setting} fetches it)")
    return root


ENGINE = engine_root(os.environ.get("LAB_DOCKER", ""))
if ENGINE:
    DOCKERD = str(ENGINE / "usr/sbin/dockerd")
    DOCKER_CLI = str(ENGINE / "usr/bin/docker")  # the CLI of the same package
    # dockerd runs docker-proxy and docker-init from PATH: this engine's first,
    # then Debian 12's containerd and runc.
    DOCKERD_PATH = f"{ENGINE}/usr/sbin:{ENGINE}/usr/bin:{os.environ.get('PATH', '')}"
else:
    DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
    DOCKER_CLI = "/usr/bin/docker"  # Debian's 20.10 client; /usr/local/bin/docker is v28
    DOCKERD_PATH = os.environ.get("PATH", "")


def _compose():
    """Compose v2 (a CLI plugin): the engine's own, else Debian 13's (Debian
    12 has only Compose v1), for dockerd 20.10 too; None if neither is here."""
    for root in (ENGINE, ENGINES / "docker-26"):
        if root and (root / COMPOSE_PLUGIN).exists():
            return str(root / COMPOSE_PLUGIN)
    return None


COMPOSE = _compose()


def versions():
    """`dockerd --version` and `docker compose version` of the lab's engine,
    for the test report's header."""
    def first_line(argv):
        try:
            run = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (run.stdout or run.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "(not installed)"
    return (f"{DOCKERD}: {first_line([DOCKERD, '--version'])}",
            f"compose: {COMPOSE}: {first_line([COMPOSE, 'version']) if COMPOSE else '(none)'}")


def engine_major():
    """The lab engine's major version (20, 26, 28...), from `dockerd --version`;
    0 when it does not say."""
    found = re.search(r"version (\d+)\.", versions()[0])
    return int(found.group(1)) if found else 0


class DockerHost:
    """Docker host `name` with number `index` (1..254), which picks its
    addresses: lab0 10.<index>.0.1/24 and docker0 172.31.<index>.1/24.

    The namespace is made here (in `lab` if given, else in a Lab of its own);
    start() starts dockerd, close() removes everything. `default_route=False`
    makes a host without a default route (an air-gapped site).
    `daemon_config` is its dockerd's daemon.json (a dict, e.g. {"dns":
    [...]}); empty by default, never the machine's /etc/docker/daemon.json.
    """

    def __init__(self, name, index, lab=None, default_route=True, daemon_config=None):
        if not 1 <= index <= 254:
            raise ValueError(f"index {index} not in 1..254")
        self.name = name
        self.index = index
        self.lab = lab or Lab()
        self._own_lab = lab is None
        self.dir = run_dir() / name
        self.plugin_dir = self.dir / "plugins"
        self.docker_host = f"unix://{self.dir / 'docker.sock'}"
        self.lab_address = f"10.{index}.0.1"
        self.gateway = f"172.31.{index}.1"  # docker0's address
        self.daemon_config = dict(daemon_config or {})
        self.netns = None
        self.dockerd = None
        self.etcd = None
        self.processes = []
        self._client = None
        self.plugin_dir.mkdir(parents=True)  # fails if the name is taken
        try:
            self.netns = self.lab.netns(name)
            # Most Docker hosts have a default route; this one goes into a
            # sink, so stray traffic never leaves the lab.
            self.lab.sink(self.netns, "lab0", f"{self.lab_address}/24")
            if default_route:
                self.lab.route(self.netns, "default", via=f"10.{index}.0.254", dev="lab0")
        except BaseException:
            self.close()
            raise

    # --- dockerd ---------------------------------------------------------

    def start(self, timeout=60):
        """Start dockerd (unless running) and wait until it answers `docker info`."""
        if self.dockerd and self.dockerd.running:
            return self
        os.makedirs(PLUGINS, exist_ok=True)  # the bind mount's mount point
        config = self.dir / "daemon.json"
        config.write_text(json.dumps(self.daemon_config))
        dockerd = [DOCKERD, "--config-file", config,
                   "--data-root", self.dir / "data", "--exec-root", self.dir / "exec",
                   "-H", self.docker_host, "--pidfile", self.dir / "dockerd.pid",
                   "--cgroup-parent", f"/{self.netns}", "--bip", f"{self.gateway}/24"]
        # A private mount namespace, so that the bind mount on PLUGINS is seen
        # by this dockerd only. nsenter, not `ip netns exec`: that remounts
        # /sys, and dockerd then fails with "Devices cgroup isn't mounted".
        argv = ["unshare", "-m", "--propagation", "private"] + in_netns(
            ["sh", "-c", f'mount --bind "$0" {PLUGINS} && exec "$@"',
             self.plugin_dir, *dockerd], self.netns)
        self.dockerd = LabProcess([str(a) for a in argv], self.dir / "dockerd.log",
                                  {**os.environ, "PATH": DOCKERD_PATH}).start()
        answered = wait_until(lambda: not self.dockerd.running or self._answers(), timeout, 0.2)
        if not (answered and self.dockerd.running):
            self.dockerd.kill()
            raise LabError(f"dockerd of {self.name} did not answer in {timeout} s;"
                           f" log {self.dockerd.log_path}:\n{self.dockerd.log_tail()}")
        return self

    def _answers(self):
        try:
            return self.docker("info", timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout=30):
        """Stop dockerd (containers stop with it); data and namespace stay."""
        if self.dockerd:
            self.dockerd.stop(timeout)

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout)

    def client(self):
        """A docker SDK client for this dockerd (the API version it speaks)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.docker_host, version="auto",
                                               timeout=60)
        return self._client

    def docker(self, *args, check=False, timeout=120, input=None, cwd=None):
        """Run the engine's docker CLI against this dockerd; CompletedProcess
        (text). `docker compose ...` works too (Compose v2, COMPOSE)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self._cli_config())  # no user config or contexts
        argv = [DOCKER_CLI, "-H", self.docker_host, *map(str, args)]
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                timeout=timeout, input=input, cwd=cwd)
        if check and result.returncode:
            raise LabError(f"docker {' '.join(argv[3:])}: {result.stderr.strip()}")
        return result

    def _cli_config(self):
        """The CLI's config folder, with Compose v2 as its plugin."""
        config = self.dir / "cli"
        link = config / "cli-plugins" / "docker-compose"
        if COMPOSE and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(COMPOSE)
        return config

    # --- other things in the host's namespace ---------------------------

    def run_in_netns(self, cmd, check=True, timeout=60):
        """Run `cmd` (argv list, or a string for sh -c) in the host's network
        namespace; CompletedProcess (text)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else [str(a) for a in cmd]
        result = subprocess.run(in_netns(argv, self.netns), capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode:
            raise LabError(f"{' '.join(argv)} in {self.netns}: "
                           f"{(result.stderr or result.stdout).strip()}")
        return result

    def start_process(self, argv, env=None, name=None, cwd=None):
        """Start a long-running process in the host's network namespace (and
        the root mount namespace), e.g. the plugin with --plugin-dir
        <plugin_dir>, in `cwd` if given. `env` is added to os.environ. Output
        goes to a log file in the host's directory. The process is stopped
        in close()."""
        name = name or Path(argv[0]).name
        log = self.dir / f"{name}-{len(self.processes)}.log"
        process = LabProcess([str(a) for a in argv], log, {**os.environ, **(env or {})},
                             self.netns, cwd)
        self.processes.append(process)
        return process.start()

    def start_etcd(self):
        """Start etcd on 127.0.0.1:2379 inside the host's namespace (host.etcd)."""
        self.etcd = EtcdServer(netns=self.netns)
        return self.etcd.start()

    # --- cleanup ---------------------------------------------------------

    def _remove_containers(self):
        if self.dockerd and self.dockerd.running:
            ids = self.docker("ps", "-aq", timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, timeout=60)

    def _close_client(self):
        if self._client is not None:
            self._client.close()
            self._client = None

    def _delete_netns(self):
        if self._own_lab:
            self.lab.close()
        elif self.netns in self.lab.namespaces:
            self.lab.delete(self.netns)

    def close(self):
        """Remove containers (while the plugin still answers), stop dockerd,
        the processes and etcd, kill whatever is left in the namespace and
        the cgroups, delete the namespace and the host's directory."""
        steps = [self._remove_containers, self._close_client, self.stop,
                 *(p.stop for p in reversed(self.processes))]
        if self.etcd:
            steps.append(self.etcd.close)
        steps.append(self._delete_netns)
        if self.netns:
            steps.append(partial(remove_cgroups, self.netns))
        run_all(*steps, partial(shutil.rmtree, self.dir, ignore_errors=True))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
