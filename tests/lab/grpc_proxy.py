"""etcd's own gRPC proxy (`etcd grpc-proxy start`) in front of etcd members:
it serves every client's watch of a range from one watch on the cluster,
which is how etcd fans out to many agents."""

import shutil
import secrets

from .common import LabError, LabProcess, free_port, shm_dir, wait_until
from .etcd import ETCD, _clean_env


class EtcdGrpcProxy:
    """A proxy on a free loopback port in front of `endpoints` (URLs);
    a context manager, or start() and close()."""

    def __init__(self, endpoints: list[str]):
        self.members = [e.split("://", 1)[-1] for e in endpoints]
        self.port, self.metrics_port = free_port(), free_port()
        self.dir = shm_dir() / f"grpc-proxy-{secrets.token_hex(3)}"
        self.process = None

    @property
    def endpoints(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=15):
        from datastore.etcd import Etcd
        from datastore.errors import DatastoreError
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = LabProcess([
            ETCD, "grpc-proxy", "start", "--endpoints", ",".join(self.members),
            "--listen-addr", f"127.0.0.1:{self.port}",
            "--advertise-client-url", f"127.0.0.1:{self.port}",
            "--metrics-addr", f"http://127.0.0.1:{self.metrics_port}",
            "--data-dir", str(self.dir / "data")], self.dir / "proxy.log", _clean_env()).start()
        client = Etcd(self.endpoints, timeout=1.0)

        def answers():
            try:
                client.revision()
                return True
            except DatastoreError:
                return not self.process.running  # let the check below report the exit
        try:
            if wait_until(answers, timeout, 0.1) and self.process.running:
                return self
        finally:
            client.close()
        self.close()
        raise LabError(f"etcd grpc-proxy did not answer in {timeout} s:\n"
                       f"{self.process.log_tail()}")

    def close(self):
        if self.process:
            self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
