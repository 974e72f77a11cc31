"""The plugin as users install it, a Docker managed plugin (v2), for the
modules that run it in lab hosts (test_managed_plugin.py, test_swarm.py).

scripts/build-plugin.sh builds the plugin directory (config.json + rootfs/)
once per session (the `plugin_build` fixture, tests/e2e/conftest.py), in a
lab Docker host of its own, from a local Python base: there is no registry
to pull one from, so tests/lab/baseimage.py makes it with debootstrap, once,
cached under /var/cache/calico-lab/. Each module then creates the plugin
from that directory (`docker plugin create`) in its own hosts.
"""

import http.client
import json
import os
import socket
import subprocess
from pathlib import Path

from tests.e2e.calico_host import REPO
from tests.lab.baseimage import ensure_base_image
from tests.lab.common import LabError, run_dir
from tests.lab.dockerd import DockerHost

NAME = "calico"
PLUGIN = f"{NAME}:latest"  # managed plugins are known by name:tag
BUILD = Path(REPO) / "scripts" / "build-plugin.sh"
BUILDER_INDEX = 250  # the builder host's number: apart from the modules' 1, 2, ...


def plugin_log(host, plugin_id, lines=40):
    """The plugin's own output: dockerd logs it with plugin=<id>."""
    try:
        text = (host.dir / "dockerd.log").read_text(errors="replace")
    except OSError as e:
        return f"(no dockerd log: {e})"
    mark = f" plugin={plugin_id}"
    found = []
    for line in text.splitlines():
        if plugin_id and line.endswith(mark):
            # time="..." level=error msg="<the plugin's line>" plugin=<id>
            message = line[:-len(mark)].partition(" msg=")[2]
            try:
                message = json.loads(message)
            except ValueError:
                pass
            found.append(message)
    return "\n".join(found[-lines:]) or "(the plugin logged nothing)"


def build_plugin_dir() -> Path:
    """scripts/build-plugin.sh --no-create in a lab host started for it
    (and removed after); the plugin directory it wrote, in the run's
    folder. Raises BaseImageUnavailable when no base image can be made."""
    outdir = run_dir() / "calico-plugin"
    with DockerHost("plugin-builder", BUILDER_INDEX) as host:
        base = ensure_base_image(host)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(host.dir / "cli")
        argv = ["bash", str(BUILD), "--base", base, "--docker-host", host.docker_host,
                "--no-create", str(outdir)]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode:
            raise LabError(f"build-plugin.sh failed ({result.returncode}):\n"
                           + "\n".join(result.stderr.splitlines()[-30:]))
    return outdir


def create_plugin(host, plugin_dir, name=PLUGIN):
    """`docker plugin create name plugin_dir` in the host (disabled); its id."""
    result = host.docker("plugin", "create", name, plugin_dir, timeout=300)
    if result.returncode:
        raise LabError(f"docker plugin create {name} failed: {result.stderr.strip()}")
    return host.docker("plugin", "inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()


def enable_plugin(host, name=PLUGIN):
    """`docker plugin enable` (30 s), with the plugin's log when it fails."""
    enabled = host.docker("plugin", "enable", "--timeout", "30", name)
    if enabled.returncode:
        raise LabError(f"docker plugin enable failed: {enabled.stderr.strip()}\n"
                       f"plugin log:\n{plugin_log(host, host.plugin_id)}")


def call(host, socket_name, path, body=None):
    """POST `body` to the enabled plugin's socket as dockerd does; (status, JSON)."""
    # dockerd's /run/docker/plugins is the host's plugin_dir (a bind mount),
    # and a managed plugin's sockets are in a directory named by its id.
    # That path is longer than a socket address may be: go through a
    # descriptor of the directory.
    fd = os.open(host.plugin_dir / host.plugin_id, os.O_PATH | os.O_DIRECTORY)
    conn = _UnixHTTPConnection(f"/proc/self/fd/{fd}/{socket_name}")
    try:
        conn.request("POST", path, json.dumps(body or {}),
                     {"Content-Type": "application/vnd.docker.plugins.v1.2+json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()
        os.close(fd)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
