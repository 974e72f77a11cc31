"""Which Calico endpoint a container sandbox has joined on this node.

A container can hold one Calico endpoint: every Calico endpoint brings the
same on-link gateway 169.254.1.1, and a second one would collide with the
first in the container's routing table (Calico's plugin failed there with
"file exists").  Join claims the sandbox with a create-only key, in the same
transaction that records the sandbox on the WorkloadEndpoint, so that a
second Calico network is refused with a clear message instead; that
transaction's revision is then the mod_revision of both keys.
DeleteEndpoint deletes the WorkloadEndpoint and releases the claim in one
transaction too.  Leave keeps the claim: dockerd may join the same endpoint
to the same sandbox again (when a legacy link is removed), and always
deletes an endpoint it has left.

Each transaction compares revisions and, when a compare fails, brings back
the keys as they are now, so a retry needs no read of its own.
"""

import copy
import hashlib

from datastore.etcd import Etcd
from datastore.resources import Resource
from datastore.retry import attempts
from driver import endpoints as ep
from driver.errors import DriverError, UnknownEndpoint

PREFIX = "/calico/libnetwork/v1/sandboxes/"
_RETRIES = 10  # few write one sandbox or endpoint: dockerd's calls for one container


class SandboxTaken(DriverError):
    """Another live endpoint holds the sandbox."""

    def __init__(self, holder: str):
        super().__init__(f"the sandbox is held by endpoint {holder[:12]}")
        self.holder = holder


class Sandboxes:
    def __init__(self, etcd: Etcd, node: str):
        self.etcd = etcd
        self.node = node

    def key(self, sandbox_key: str) -> str:
        digest = hashlib.sha256(sandbox_key.encode()).hexdigest()[:32]
        return f"{PREFIX}{self.node}/{digest}"

    def claim(self, wep: Resource, sandbox_key: str, is_live) -> Resource:
        """Claim the sandbox for the endpoint and record it on its
        WorkloadEndpoint (`wep`, with the revision it was read or written
        at) in one transaction; the endpoint may hold it already.

        Returns the WorkloadEndpoint as written: its revision is the
        claim's too.  A holder for which is_live(holder) is False is a
        leftover and is replaced; a live one raises SandboxTaken.
        UnknownEndpoint when the WorkloadEndpoint is gone; TooManyConflicts
        when every attempt lost.
        """
        endpoint_id = wep.spec["endpoint"]
        key = self.key(sandbox_key)
        held = None  # the claim as read back, once a compare failed on it
        wep = copy.deepcopy(wep)  # the caller's copy may be shared with other threads
        for _ in attempts(f"claiming sandbox {sandbox_key}", _RETRIES):
            wep.annotations[ep.SANDBOX_ANNOTATION] = sandbox_key
            record = (wep.key, wep.to_json(), wep.revision)
            if held is None:
                done = self.etcd.commit(creates=[(key, endpoint_id)], updates=[record],
                                        read_back=[key, wep.key])
            else:
                done = self.etcd.commit(updates=[(key, endpoint_id, held.mod_revision), record],
                                        read_back=[key, wep.key])
            if done:
                wep.revision = done.revision
                return wep
            held, found = done.reads[key], done.reads[wep.key]
            if found is None:
                raise UnknownEndpoint(f"endpoint {endpoint_id[:12]} was deleted while joining")
            wep = Resource.from_json(found.value, found.mod_revision)
            holder = held.value.decode() if held is not None else endpoint_id
            if holder != endpoint_id and is_live(holder):
                raise SandboxTaken(holder)

    def remove_endpoint(self, wep: Resource, claim_revision: int | None) -> None:
        """Delete the WorkloadEndpoint (`wep`, with the revision it was read
        or written at) and release the sandbox claim it records, in one
        transaction.  claim_revision: the claim's mod_revision when known;
        else the WorkloadEndpoint's is tried (Join wrote both at once).  A
        claim that another endpoint holds now is left alone.
        """
        endpoint_id = wep.spec["endpoint"]
        revisions = {wep.key: wep.revision}  # the keys still to delete
        sandbox = wep.annotations.get(ep.SANDBOX_ANNOTATION)
        if sandbox:
            revisions[self.key(sandbox)] = claim_revision or wep.revision
        for _ in attempts(f"deleting endpoint {endpoint_id[:12]}", _RETRIES):
            done = self.etcd.commit(deletes=list(revisions.items()), read_back=list(revisions))
            if done:
                return
            for key, found in done.reads.items():
                ours = found is not None and (key == wep.key or found.value.decode() == endpoint_id)
                if ours:
                    revisions[key] = found.mod_revision
                else:
                    del revisions[key]
            if not revisions:
                return
