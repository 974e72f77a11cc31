"""Which Calico endpoint a container sandbox has joined on this node.

A container can hold one Calico endpoint: every Calico endpoint brings the
same on-link gateway 169.254.1.1, and a second one would collide with the
first in the container's routing table (Calico's plugin failed there with
"file exists").  Join claims the sandbox with a create-only key so that a
second Calico network is refused with a clear message instead.
"""

import hashlib

from datastore.etcd import Etcd

PREFIX = "/calico/libnetwork/v1/sandboxes/"


class Sandboxes:
    def __init__(self, etcd: Etcd, node: str):
        self.etcd = etcd
        self.node = node

    def _key(self, sandbox_key: str) -> str:
        digest = hashlib.sha256(sandbox_key.encode()).hexdigest()[:32]
        return f"{PREFIX}{self.node}/{digest}"

    def claim(self, sandbox_key: str, endpoint_id: str, is_live) -> str | None:
        """Claim the sandbox for endpoint_id.

        Returns None on success (also when endpoint_id already holds it), or
        the endpoint id that holds it.  A holder for which is_live(holder) is
        False is a leftover and is replaced.
        """
        key = self._key(sandbox_key)
        for _ in range(10):
            if self.etcd.create(key, endpoint_id) is not None:
                return None
            kv = self.etcd.get(key)
            if kv is None:
                continue
            holder = kv.value.decode()
            if holder == endpoint_id:
                return None
            if is_live(holder):
                return holder
            if self.etcd.update(key, endpoint_id, kv.mod_revision) is not None:
                return None
        return None

    def release(self, sandbox_key: str, endpoint_id: str) -> None:
        key = self._key(sandbox_key)
        kv = self.etcd.get(key)
        if kv is not None and kv.value.decode() == endpoint_id:
            self.etcd.delete(key, kv.mod_revision)
