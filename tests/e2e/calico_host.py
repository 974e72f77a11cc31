"""Running the plugin in a lab Docker host and looking at what it did."""

import json
import socket
import sys
from pathlib import Path

from tests.lab import LabProcess
from tests.lab.common import LabError, ip, run_dir, wait_until

REPO = str(Path(__file__).resolve().parents[2])
WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/libnetwork/"
PROFILE_PREFIX = "/calico/resources/v3/projectcalico.org/profiles/"
# `docker network create` arguments for a Calico network.
CALICO = ("--driver", "calico", "--ipam-driver", "calico-ipam")
IPV4_POOL = "192.169.0.0/16"
IPV6_POOL = "fd80:24e2:f998:72d6::/64"
POLICY_TABLE = "table inet calico-libnetwork"
ANTISPOOFING_TABLE = "table inet calico-libnetwork-raw"
# The console script, as systemd, the managed plugin and the quick start run it.
ENTRY_POINT = str(Path(sys.executable).with_name("calico-libnetwork"))


def plugin_env(host, **extra):
    env = {"ETCD_ENDPOINTS": host.etcd.endpoints, "NODENAME": host.name,
           "DOCKER_HOST": host.docker_host, "PYTHONPATH": REPO,
           # Each host's agent files in its own folder: labs running at once
           # on one machine name their hosts alike (h1, h2, ...).
           "CALICO_LIBNETWORK_RUN_DIR": str(agent_run_dir(host)),
           "CALICO_IPV4POOL_CIDR": IPV4_POOL, "CALICO_IPV6POOL_CIDR": IPV6_POOL}
    env.update(extra)
    return env


def agent_run_dir(host) -> Path:
    """Where the host's node agent leaves its status files."""
    return host.dir / "agent-run"


def start_plugin(host, *options, code=REPO, command=(sys.executable, "-m", "plugin.cli"),
                 **extra_env):
    """Start `calico-libnetwork run [options]` in the host and wait for its
    sockets.  code: the source tree to run (another release's, extracted),
    its folder the plugin's working directory, where `python -m` looks first
    (for the node agent the plugin starts as well); command: what runs the CLI."""
    argv = [*command, "run", "--plugin-dir", host.plugin_dir, *options]
    process = host.start_process(argv, env=plugin_env(host, PYTHONPATH=str(code), **extra_env),
                                 name="plugin", cwd=code)
    sockets = [Path(host.plugin_dir) / name for name in ("calico.sock", "calico-ipam.sock")]
    if not wait_until(lambda: all(_answers(s) for s in sockets) or not process.running, 30):
        raise LabError(f"plugin did not start:\n{process.log_tail()}")
    if not process.running:
        raise LabError(f"plugin exited:\n{process.log_tail()}")
    return process


def _answers(path):
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def calicoctl(host, *args, check=True, **extra_env):
    """Our CLI, run inside the host (where its etcd is reachable)."""
    env = " ".join(f"{k}={v}" for k, v in plugin_env(host, **extra_env).items())
    cmd = f"env {env} {sys.executable} -m plugin.cli " + " ".join(args)
    return host.run_in_netns(cmd, check=check)


def docker(host, *args):
    """Run the docker CLI in the host; raise with its stderr on failure."""
    result = host.docker(*args)
    if result.returncode:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def docker_fails(host, *args) -> str:
    result = host.docker(*args)
    assert result.returncode != 0, f"docker {' '.join(args)} unexpectedly worked"
    return result.stderr


def endpoint_id(host, container, network):
    return docker(host, "inspect", "-f",
                  f"{{{{(index .NetworkSettings.Networks \"{network}\").EndpointID}}}}", container)


def container_ip(host, container, network, field="IPAddress"):
    return docker(host, "inspect", "-f",
                  f"{{{{(index .NetworkSettings.Networks \"{network}\").{field}}}}}", container)


def wep(host, endpoint):
    name = f"{host.name.replace('-', '--')}-libnetwork-libnetwork-{endpoint}"
    raw = host.etcd.get(WEP_PREFIX + name)
    return None if raw is None else json.loads(raw)


def nft_tables(host) -> set[str]:
    """The host's nftables tables as `nft list tables` names them, e.g.
    POLICY_TABLE (a set: the anti-spoofing table's name begins like it)."""
    return {line.strip() for line in host.run_in_netns(["nft", "list", "tables"])
            .stdout.splitlines()}


def keys(host, prefix):
    return host.etcd.ctl("get", "--prefix", "--keys-only", prefix).stdout.split()


def in_host(host, cmd) -> str:
    return host.run_in_netns(cmd).stdout


def wait_for(predicate, timeout=10, message="condition"):
    if not wait_until(predicate, timeout, 0.1):
        raise AssertionError(f"timed out waiting for {message}")


def remove_all(host):
    """Remove every container and calico network: the state between tests."""
    ids = host.docker("ps", "-aq").stdout.split()
    if ids:
        host.docker("rm", "-f", *ids)
    nets = host.docker("network", "ls", "-q", "--filter", "driver=calico").stdout.split()
    for net in nets:
        host.docker("network", "rm", net)


def source_seen_outside(host, container, outside_netns, target, port=9000):
    """The source address a listener on `target`:`port` in `outside_netns`
    sees when `container` on `host` connects to it (after any NAT)."""
    family = "AF_INET6" if ":" in target else "AF_INET"
    log = run_dir() / f"outside-listener-{outside_netns}-{port}.log"
    log.unlink(missing_ok=True)  # a listener's log is appended to
    listener = LabProcess(
        [sys.executable, "-c",
         "import socket\n"
         f"s = socket.socket(socket.{family}); s.bind(({target!r}, {port})); s.listen()\n"
         "c, peer = s.accept(); print(peer[0], flush=True)"],
        log, netns=outside_netns).start()
    try:
        if not wait_until(lambda: "LISTEN" in ip("netns", "exec", outside_netns, "ss", "-ltn")
                          .stdout, 10, 0.2):
            raise LabError("the outside listener did not start")
        target_text = f"[{target}]" if ":" in target else target
        host.docker("exec", container, "sh", "-c", f"echo hi | nc -w 2 {target} {port}")
        if not wait_until(lambda: not listener.running, 10, 0.2):
            raise LabError(f"no connection from {container} reached {target_text}:{port}")
        return log.read_text().strip()
    finally:
        listener.kill()


class Project:
    """A Compose project in the host's folder, driven with `docker compose`
    (host.plugin: the plugin whose log a failure shows)."""

    def __init__(self, host, name, text):
        self.host, self.name = host, name
        self.dir = host.dir / f"compose-{name}"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "compose.yaml").write_text(text)

    def compose(self, *args, check=True):
        result = self.host.docker("compose", "--project-name", self.name, *args,
                                  cwd=self.dir, timeout=180)
        if check and result.returncode:
            raise AssertionError(f"docker compose {' '.join(args)} failed:\n"
                                 f"{result.stdout}{result.stderr}\nplugin log:\n"
                                 f"{self.host.plugin.log_tail()}")
        return result

    def container(self, service):
        return self.compose("ps", "-q", service).stdout.strip()


# -- the lab's routes and Nodes, as the multi-host modules look at them ------

def routes(host, *args, family=4):
    """`ip [-6] route show ARGS` in the host, one stripped line each."""
    flags = ("-6",) if family == 6 else ()
    return [line.strip() for line in ip(*flags, "route", "show", *args, netns=host.netns)
            .stdout.splitlines()]


def has_route(host, text, family=4):
    return any(line.startswith(text) for line in routes(host, family=family))


def node(cluster, name):
    """Node `name`'s record in the cluster's etcd, or None."""
    raw = cluster.etcd.get(f"/calico/resources/v3/projectcalico.org/nodes/{name}")
    return json.loads(raw) if raw else None


def wait(predicate, timeout, what):
    assert wait_until(predicate, timeout, 0.2), f"timed out waiting for {what}"
