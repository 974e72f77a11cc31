"""A real single-member etcd 3.4 for tests, with its data in /dev/shm."""

import os
import secrets
import shutil
import subprocess
from typing import NamedTuple

from .common import LabError, LabProcess, free_port, in_netns, shm_dir, wait_until

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"


def _clean_env():
    # etcd reads any ETCD_* variable as a flag, and the plugin's own
    # configuration (ETCD_ENDPOINTS, ...) may be set in the test environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    env["ETCDCTL_API"] = "3"
    return env


class EtcdTls(NamedTuple):
    """etcd serving https and requiring client certificates signed by `ca`
    (paths; tests/lab/tls.py makes them)."""
    ca: str  # --trusted-ca-file
    cert: str  # the server's certificate and key
    key: str
    client_cert: str  # a client certificate and key for etcdctl
    client_key: str
    client_cert_auth: bool = True  # False: any client may connect (no certificate)


class EtcdServer:
    """etcd listening on `host`, in the current or in network namespace `netns`.

    Ports default to free ones in the root namespace, and to 2379/2380 in a
    lab namespace (which is ours alone). Use as a context manager, or call
    start() and close().
    """

    def __init__(self, host="127.0.0.1", client_port=None, peer_port=None, netns=None,
                 tls: EtcdTls | None = None):
        self.host = host
        self.tls = tls
        self.netns = netns
        self._pick_ports = client_port is None and netns is None
        self.client_port = client_port or (2379 if netns else free_port(host))
        self.peer_port = peer_port or (2380 if netns else free_port(host))
        self.dir = shm_dir() / f"etcd-{secrets.token_hex(3)}"
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "etcd.log"
        self.process = None

    @property
    def endpoints(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def running(self):
        return self.process is not None and self.process.running

    def _argv(self):
        peer = f"http://{self.host}:{self.peer_port}"
        return [ETCD, "--name", "lab", "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.endpoints,
                "--advertise-client-urls", self.endpoints,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"lab={peer}",
                # One member: a short election timeout makes it leader sooner.
                "--heartbeat-interval", "10", "--election-timeout", "100",
                "--logger", "zap", "--log-outputs", "stderr",
                *(["--cert-file", self.tls.cert, "--key-file", self.tls.key] if self.tls else []),
                *(["--client-cert-auth", "--trusted-ca-file", self.tls.ca]
                  if self.tls and self.tls.client_cert_auth else [])]

    def start(self, timeout=15):
        """Start etcd (unless running) and wait until it serves requests."""
        if self.running:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            self.process = LabProcess(self._argv(), self.log_path, _clean_env(), self.netns).start()
            if wait_until(self._healthy, timeout, 0.1) and self.process.running:
                return self
            self.process.kill()
            # A free port picked earlier may have been taken since: pick again.
            if not (self._pick_ports and "address already in use" in self.process.log_tail()):
                break
            self.client_port, self.peer_port = free_port(self.host), free_port(self.host)
        raise LabError(f"etcd at {self.endpoints} did not become healthy in {timeout} s;"
                       f" log {self.log_path}:\n{self.process.log_tail()}")

    def _healthy(self):
        if not self.process.running:
            return True  # let start() report the exit instead of waiting
        return self.ctl("endpoint", "health", "--dial-timeout=300ms",
                        "--command-timeout=1s", check=False).returncode == 0

    def ctl(self, *args, check=True, timeout=30):
        """Run `etcdctl --endpoints <this> args...` (in the namespace) and return
        the CompletedProcess (text); raise LabError on failure if `check`."""
        tls = (["--cacert", self.tls.ca, "--cert", self.tls.client_cert,
                "--key", self.tls.client_key] if self.tls else [])
        argv = in_netns([ETCDCTL, "--endpoints", self.endpoints, *tls, *args], self.netns)
        result = subprocess.run(argv, capture_output=True, text=True, env=_clean_env(),
                                timeout=timeout)
        if check and result.returncode:
            raise LabError(f"etcdctl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def get(self, key):
        """The value at `key`, or None."""
        lines = self.ctl("get", "--print-value-only", "--", key).stdout.splitlines()
        return lines[0] if lines else None

    def put(self, key, value):
        self.ctl("put", "--", key, value)

    def wipe(self):
        """Delete every key."""
        self.ctl("del", "--prefix", "")

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL; the data is kept."""
        if self.process:
            self.process.stop(timeout)

    def kill(self):
        """SIGKILL, as in a crash; the data is kept."""
        if self.process:
            self.process.kill()

    def restart(self, timeout=15):
        self.stop()
        return self.start(timeout)

    def close(self):
        """Stop etcd and delete its data."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
