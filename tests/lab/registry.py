"""An image registry for lab hosts: Debian's docker-registry (the
distribution registry, plain http), run in a lab host's namespace on one of
its addresses, its storage in the host's folder. Hosts that pull from it
list it in daemon.json's "insecure-registries" (only loopback is insecure by
default, and a lab host's dockerd cannot reach the root namespace's)."""

import shutil

import yaml

from .common import LabError, wait_until

REGISTRY = "/usr/bin/docker-registry"


def start_registry(host, address, port=5000):
    """Serve a registry at address:port in DockerHost `host`'s namespace
    (stopped with the host); its "address:port", the images' prefix."""
    if not shutil.which(REGISTRY):
        raise LabError(f"{REGISTRY} is not installed (scripts/deps.sh installs docker-registry)")
    folder = host.dir / "registry"
    folder.mkdir(exist_ok=True)
    config = folder / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": "0.1", "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
        "http": {"addr": f"{address}:{port}"}}))
    process = host.start_process([REGISTRY, "serve", config], name="registry")
    where = f"{address}:{port}"
    probe = ["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"]
    if not wait_until(lambda: not process.running
                      or host.run_in_netns(probe, check=False).returncode == 0, 15, 0.1) \
            or not process.running:
        raise LabError(f"registry at {where} did not start:\n{process.log_tail()}")
    return where
