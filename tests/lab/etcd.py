"""Real etcd 3.4 for tests, with its data in /dev/shm: one member
(EtcdServer), or a cluster of several (EtcdCluster) on loopback ports or one
member per lab host."""

import json
import os
import secrets
import shutil
import subprocess
import time
from typing import NamedTuple

from .common import LabError, LabProcess, free_port, in_netns, run_all, shm_dir, wait_until

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


class _Keys:
    """Reading and writing keys with etcdctl, for EtcdServer and EtcdCluster
    (each has its own `ctl`)."""

    def get(self, key):
        """The value at `key`, or None."""
        lines = self.ctl("get", "--print-value-only", "--", key).stdout.splitlines()
        return lines[0] if lines else None

    def put(self, key, value):
        self.ctl("put", "--", key, value)

    def wipe(self):
        """Delete every key."""
        self.ctl("del", "--prefix", "")


class EtcdServer(_Keys):
    """etcd listening on `host`, in the current or in network namespace `netns`.

    Ports default to free ones in the root namespace, and to 2379/2380 in a
    lab namespace (which is ours alone). Use as a context manager, or call
    start() and close().
    """

    def __init__(self, host="127.0.0.1", client_port=None, peer_port=None, netns=None,
                 tls: EtcdTls | None = None, name="lab"):
        self.name = name
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
        # The members of its cluster (EtcdCluster sets it): None, alone.
        self.initial_cluster = None

    @property
    def peer_url(self):
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoints(self):
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.client_port}"

    @property
    def running(self):
        return self.process is not None and self.process.running

    def _argv(self):
        peer = self.peer_url
        # One member: a short election timeout makes it leader sooner.  A
        # cluster keeps etcd's defaults: on a busy machine shorter ones
        # make members call elections while their leader is alive.
        timing = ("10", "100") if self.initial_cluster is None else ("100", "1000")
        return [ETCD, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.endpoints,
                "--advertise-client-urls", self.endpoints,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
                "--heartbeat-interval", timing[0], "--election-timeout", timing[1],
                "--logger", "zap", "--log-outputs", "stderr",
                *(["--cert-file", self.tls.cert, "--key-file", self.tls.key] if self.tls else []),
                *(["--client-cert-auth", "--trusted-ca-file", self.tls.ca]
                  if self.tls and self.tls.client_cert_auth else [])]

    def start(self, timeout=15):
        """Start etcd (unless running) and wait until it serves requests
        (a cluster's member: until its cluster has a quorum)."""
        if self.running:
            return self
        for _ in range(3):
            self.launch()
            if wait_until(self._healthy, timeout, 0.1) and self.process.running:
                return self
            self.process.kill()
            # A free port picked earlier may have been taken since: pick
            # again (a member alone: the cluster knows its ports).
            if not (self._pick_ports and self.initial_cluster is None
                    and "address already in use" in self.process.log_tail()):
                break
            self.client_port, self.peer_port = free_port(self.host), free_port(self.host)
        raise self._unhealthy(timeout)

    def launch(self):
        """Start the process, without waiting for it to serve."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = LabProcess(self._argv(), self.log_path, _clean_env(), self.netns).start()

    def _unhealthy(self, timeout):
        return LabError(f"etcd at {self.endpoints} did not become healthy in {timeout} s;"
                        f" log {self.log_path}:\n{self.process.log_tail()}")

    def _healthy(self):
        if not self.process.running:
            return True  # let start() report the exit instead of waiting
        return self.ctl("endpoint", "health", "--dial-timeout=300ms",
                        "--command-timeout=1s", check=False).returncode == 0

    def ctl(self, *args, check=True, timeout=30, endpoints=None):
        """Run `etcdctl --endpoints <this, or endpoints> args...` (in the
        namespace) and return the CompletedProcess (text); raise LabError on
        failure if `check`."""
        tls = (["--cacert", self.tls.ca, "--cert", self.tls.client_cert,
                "--key", self.tls.client_key] if self.tls else [])
        argv = in_netns([ETCDCTL, "--endpoints", endpoints or self.endpoints, *tls, *args],
                        self.netns)
        result = subprocess.run(argv, capture_output=True, text=True, env=_clean_env(),
                                timeout=timeout)
        if check and result.returncode:
            raise LabError(f"etcdctl {' '.join(args)}: {result.stderr.strip()}")
        return result

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


class EtcdCluster(_Keys):
    """An etcd cluster of several members, each an EtcdServer named m1, m2,
    ...: on free loopback ports of the current namespace (`size` of them),
    or at `places`, (netns, address) pairs, e.g. one per lab host.

    `endpoints` lists every member, as a user sets ETCD_ENDPOINTS; reads
    and writes (get, put, ctl) go to any member that serves.  kill(),
    stop() and start() act on one member; close() removes them all.
    """

    def __init__(self, size=3, places=None, tls: EtcdTls | None = None):
        places = places or [(None, "127.0.0.1")] * size
        self.members = [EtcdServer(host=address, netns=netns, tls=tls, name=f"m{n}")
                        for n, (netns, address) in enumerate(places, 1)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    @property
    def endpoints(self):
        return ",".join(m.endpoints for m in self.members)

    @property
    def running(self):
        return [m for m in self.members if m.running]

    def start(self, timeout=30):
        """Start every member that is not running and wait until each serves
        (none does before a quorum of them runs)."""
        waiting = [m for m in self.members if not m.running]
        for member in waiting:
            member.launch()
        for member in waiting:
            if not wait_until(member._healthy, timeout, 0.1) or not member.running:
                raise member._unhealthy(timeout)
        return self

    def statuses(self):
        """{member: its `endpoint status` (dict)} of the members that answer."""
        found = {}
        for member in self.running:
            result = member.ctl("endpoint", "status", "-w", "json", "--command-timeout=2s",
                                check=False)
            if result.returncode == 0:
                found[member] = json.loads(result.stdout)[0]["Status"]
        return found

    def leader(self):
        """The member that leads now (None: none does).  (etcdctl's JSON
        leaves out fields that are 0: "leader" when there is none.)"""
        for member, status in self.statuses().items():
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return member
        return None

    def wait_for_leader(self, timeout=15):
        """The leader, once there is one."""
        deadline = time.monotonic() + timeout
        while (leader := self.leader()) is None:
            if time.monotonic() > deadline:
                raise LabError(f"the etcd cluster elected no leader in {timeout} s")
            time.sleep(0.2)
        return leader

    def ctl(self, *args, check=True, timeout=30):
        """etcdctl against every member (run where the first running one is)."""
        member = (self.running or self.members)[0]
        return member.ctl(*args, check=check, timeout=timeout, endpoints=self.endpoints)

    def revision(self):
        """The store's revision, as a member that answers sees it."""
        return max(s["header"]["revision"] for s in self.statuses().values())

    def close(self):
        run_all(*(m.close for m in self.members))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
