"""Calico v3 resources in etcd, stored exactly as libcalico-go stores them.

Keys: /calico/resources/v3/projectcalico.org/<plural>[/<namespace>]/<name>.
Values: the whole object as JSON with kind, apiVersion, metadata and spec.
resourceVersion is never stored: it is the key's mod_revision.  uid and
creationTimestamp are always stored, because calicoctl refuses to update an
object that lacks them.
"""

import copy
import datetime
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from datastore.errors import (ResourceAlreadyExists, ResourceConflict,
                              ResourceNotFound)
from datastore.etcd import Etcd
from datastore.retry import RETRIES, attempts

API_VERSION = "projectcalico.org/v3"
PREFIX = "/calico/resources/v3/projectcalico.org/"

PLURALS = {
    "IPPool": "ippools",
    "Node": "nodes",
    "WorkloadEndpoint": "workloadendpoints",
    "Profile": "profiles",
    "GlobalNetworkPolicy": "globalnetworkpolicies",
    "ClusterInformation": "clusterinformations",
    "FelixConfiguration": "felixconfigurations",
    "BGPConfiguration": "bgpconfigurations",
    "BGPPeer": "bgppeers",
    "HostEndpoint": "hostendpoints",
}
NAMESPACED = {"WorkloadEndpoint"}
_META_ORDER = {k: i for i, k in enumerate(
    ["generateName", "uid", "generation", "creationTimestamp", "deletionTimestamp",
     "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
     "finalizers", "managedFields"])}

# DNS-1123 subdomain, as libcalico-go's validator requires for names.
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def valid_name(name: str) -> bool:
    return len(name) <= 253 and bool(NAME_RE.match(name))


@dataclass
class Resource:
    """One v3 object.  metadata and spec are kept as plain dicts so records
    written by other tools round-trip without losing fields we don't model."""

    kind: str
    name: str
    spec: dict = field(default_factory=dict)
    namespace: str | None = None
    metadata: dict = field(default_factory=dict)  # everything but name/namespace
    status: dict | None = None
    revision: int | None = None  # etcd mod_revision == resourceVersion

    @property
    def key(self) -> str:
        return resource_key(self.kind, self.name, self.namespace)

    @property
    def labels(self) -> dict:
        return self.metadata.setdefault("labels", {})

    @property
    def annotations(self) -> dict:
        return self.metadata.setdefault("annotations", {})

    def to_dict(self, with_revision=False) -> dict:
        meta = {"name": self.name}
        if self.namespace:
            meta["namespace"] = self.namespace
        rest = {k: v for k, v in self.metadata.items()
                if v not in ({}, None) and k not in ("resourceVersion", "selfLink")}
        # Go's ObjectMeta field order, so our records read like calicoctl's.
        for k in sorted(rest, key=lambda k: _META_ORDER.get(k, len(_META_ORDER))):
            meta[k] = rest[k]
        if with_revision and self.revision is not None:
            meta["resourceVersion"] = str(self.revision)
        obj = {"kind": self.kind, "apiVersion": API_VERSION,
               "metadata": meta, "spec": self.spec}
        if self.status is not None:
            obj["status"] = self.status
        return obj

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, obj: dict, revision=None) -> "Resource":
        """A Resource of its own: obj is copied, so the caller may keep it."""
        return cls._adopt(copy.deepcopy(obj), revision)

    @classmethod
    def from_json(cls, raw: bytes | str, revision=None) -> "Resource":
        """A Resource from stored JSON (no copy: nothing else holds it)."""
        try:  # UTF-8 decoded first: json.loads of bytes looks for the encoding in Python
            obj = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        except ValueError:
            obj = json.loads(raw)  # another encoding, or a byte order mark, as json finds them
        return cls._adopt(obj, revision)

    @classmethod
    def _adopt(cls, obj: dict, revision) -> "Resource":
        meta = obj.get("metadata") or {}
        name = meta.pop("name", None)
        namespace = meta.pop("namespace", None)
        meta.pop("resourceVersion", None)
        return cls(kind=obj["kind"], name=name, namespace=namespace,
                   spec=obj.get("spec") or {}, metadata=meta,
                   status=obj.get("status"), revision=revision)


def kind_prefix(kind: str) -> str:
    """Where every resource of `kind` is stored: the one home of its prefix."""
    return f"{PREFIX}{PLURALS[kind]}/"


def resource_key(kind: str, name: str, namespace: str | None = None) -> str:
    if kind in NAMESPACED:
        if not namespace:
            raise ValueError(f"{kind} {name} needs a namespace")
        return f"{kind_prefix(kind)}{namespace}/{name}"
    return f"{kind_prefix(kind)}{name}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Resources:
    """Create/read/update/delete of v3 resources with optimistic concurrency."""

    def __init__(self, etcd: Etcd):
        self.etcd = etcd

    def get(self, kind, name, namespace=None) -> Resource | None:
        kv = self.etcd.get(resource_key(kind, name, namespace))
        return None if kv is None else _from_kv(kv)

    def list(self, kind, namespace=None, name_prefix="") -> list[Resource]:
        prefix = kind_prefix(kind)
        if namespace:
            prefix += f"{namespace}/"
        kvs, _ = self.etcd.get_prefix(prefix + name_prefix)
        return [_from_kv(kv) for kv in kvs]

    def create(self, res: Resource) -> Resource:
        res = copy.deepcopy(res)
        res.metadata.setdefault("uid", str(uuid.uuid4()))
        res.metadata.setdefault("creationTimestamp", _now())
        rev = self.etcd.create(res.key, res.to_json())
        if rev is None:
            raise ResourceAlreadyExists(
                f"{res.kind} {_display(res.name, res.namespace)} already exists")
        res.revision = rev
        return res

    def update(self, res: Resource) -> Resource:
        """Write res if it is unchanged since res.revision was read."""
        if res.revision is None:
            raise ValueError("update needs the revision the resource was read at")
        res = copy.deepcopy(res)
        res.metadata.setdefault("uid", str(uuid.uuid4()))
        res.metadata.setdefault("creationTimestamp", _now())
        rev = self.etcd.update(res.key, res.to_json(), res.revision)
        if rev is None:
            what = f"{res.kind} {_display(res.name, res.namespace)}"
            if self.etcd.get(res.key) is None:
                raise ResourceNotFound(f"{what} does not exist")
            raise ResourceConflict(f"{what} was changed concurrently")
        res.revision = rev
        return res

    def delete(self, kind, name, namespace=None, revision=None) -> bool:
        """True if deleted; False if it did not exist (or changed, with revision)."""
        return self.etcd.delete(resource_key(kind, name, namespace), revision)

    def modify(self, kind: str, name: str,
               mutate: Callable[[Resource], Resource | None],
               create: Callable[[], Resource] | None = None,
               namespace: str | None = None, retries: int = RETRIES,
               known: Resource | None = None) -> Resource:
        """Read-modify-write one resource with compare-and-swap.

        mutate(current) gets the stored resource and returns the Resource to
        write (current changed in place, or a new one), or None when nothing
        needs writing: modify then returns current as read.  When there is no
        such resource, create() gives the one to create; without create,
        ResourceNotFound.  A write that loses against another writer re-reads
        and calls mutate (or create) again, as datastore.retry paces it, so
        both must be safe to call more than once.  TooManyConflicts when
        every attempt lost.  Returns what was written, with its new revision.
        known: a copy the caller wrote last (with its revision), tried first
        without a read; when it is stale, or needs no change, modify reads.
        """
        if known is not None:
            wanted = mutate(copy.deepcopy(known))
            if wanted is not None:
                wanted.revision = known.revision
                try:
                    return self.update(wanted)
                except (ResourceConflict, ResourceNotFound):
                    pass
        display = _display(name, namespace)
        for _ in attempts(f"changing {kind} {display}", retries):
            current = self.get(kind, name, namespace)
            if current is None:
                if create is None:
                    raise ResourceNotFound(f"{kind} {display} does not exist")
                new = create()
                try:
                    return self.create(new)
                except ResourceAlreadyExists:
                    continue
            wanted = mutate(current)
            if wanted is None:
                return current
            wanted.revision = current.revision
            try:
                return self.update(wanted)
            except (ResourceConflict, ResourceNotFound):
                continue

    def apply(self, res: Resource) -> Resource:
        """Create, or update keeping the stored uid/creationTimestamp."""
        def replace(current: Resource) -> Resource:
            merged = copy.deepcopy(res)
            for k in ("uid", "creationTimestamp"):
                if k in current.metadata:
                    merged.metadata[k] = current.metadata[k]
            return merged
        return self.modify(res.kind, res.name, replace, create=lambda: res,
                           namespace=res.namespace)


def _from_kv(kv) -> Resource:
    return Resource.from_json(kv.value, revision=kv.mod_revision)


def _display(name: str, namespace: str | None) -> str:
    return f"{namespace}/{name}" if namespace else name
