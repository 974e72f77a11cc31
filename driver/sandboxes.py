"""Which Calico endpoint a container sandbox has joined on this node.

A container can hold one Calico endpoint: every Calico endpoint brings the
same on-link gateway 169.254.1.1, and a second one would collide with the
first in the container's routing table (Calico's plugin failed there with
"file exists").  Join claims the sandbox with a create-only key, in the same
transaction that records the sandbox on the WorkloadEndpoint, so that a
second Calico network is refused with a clear message instead.
"""

import hashlib

from datastore.etcd import Etcd
from driver.errors import DriverError

PREFIX = "/calico/libnetwork/v1/sandboxes/"
_RETRIES = 10


class Sandboxes:
    def __init__(self, etcd: Etcd, node: str):
        self.etcd = etcd
        self.node = node

    def key(self, sandbox_key: str) -> str:
        digest = hashlib.sha256(sandbox_key.encode()).hexdigest()[:32]
        return f"{PREFIX}{self.node}/{digest}"

    def claim(self, sandbox_key: str, endpoint_id: str, is_live, record) -> str | None:
        """Claim the sandbox for endpoint_id, writing record() -> (key, value,
        mod_revision) in the same transaction.

        Returns None on success (also when endpoint_id already holds it), or
        the endpoint id that holds it.  A holder for which is_live(holder) is
        False is a leftover and is replaced.  record() is called again after
        a lost race, so it must re-read what it writes.
        """
        key = self.key(sandbox_key)
        for _ in range(_RETRIES):
            if self.etcd.commit(creates=[(key, endpoint_id)], updates=[record()]):
                return None
            kv = self.etcd.get(key)
            if kv is None:
                continue  # the record changed under us, or the holder just left
            holder = kv.value.decode()
            if holder != endpoint_id and is_live(holder):
                return holder
            if self.etcd.commit(updates=[(key, endpoint_id, kv.mod_revision), record()]):
                return None
        raise DriverError(f"sandbox {sandbox_key}: too many concurrent changes; retry")

    def release(self, sandbox_key: str, endpoint_id: str) -> None:
        key = self.key(sandbox_key)
        kv = self.etcd.get(key)
        if kv is not None and kv.value.decode() == endpoint_id:
            self.etcd.delete(key, kv.mod_revision)
