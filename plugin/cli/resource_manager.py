"""calicoctl's resource manager: get, list, create, apply and delete any kind.

IP pools go through ipam.pools, so they get its validation, defaults,
overlap refusal, Felix side effect and calicoctl's delete; Profiles and
GlobalNetworkPolicies through datastore.policy, and BGPPeers and
BGPConfigurations through datastore.bgp, so that only what the agent
enforces is stored (checked(), for every object before any is written); the
other kinds go straight to the datastore.  A GlobalNetworkPolicy is found
under its stored name, default.<name>.  apply keeps the stored uid and
creationTimestamp, writes nothing when nothing changed, and with a
resourceVersion in the manifest only overwrites that revision (as calicoctl
apply does).
"""

import copy
import sys

from agent import node
from datastore import bgp, policy
from datastore.errors import ResourceAlreadyExists
from datastore.felix_configuration import FelixConfigurationError
from datastore.resources import Resource, Resources, valid_name
from ipam import pools
from ipam.errors import InvalidPool, PoolInUse
from ipam.pools import Pool
from plugin.cli.errors import CommandError
from plugin.cli.kinds import namespaced, plural, shown, shown_name, stored_name
from plugin.cli.output import Outcome

_IDENTITY = ("uid", "creationTimestamp")
_STRING, _BOOLEAN, _NUMBER = (str, "a string"), (bool, "true or false"), (int, "a number")
_POOL_FIELD_TYPES = {"cidr": _STRING, "ipipMode": _STRING, "vxlanMode": _STRING,
                     "natOutgoing": _BOOLEAN, "disabled": _BOOLEAN, "blockSize": _NUMBER,
                     "nodeSelector": _STRING}


class ResourceManager:
    def __init__(self, resources: Resources):
        self.resources = resources

    def get(self, kind: str, name: str, namespace: str | None = None) -> Resource:
        if kind == "IPPool":  # with libcalico-go's read-side defaults, as calicoctl shows
            return pools.get_pool(self.resources, name).to_resource()
        stored = stored_name(kind, name)
        res = self.resources.get(kind, stored, namespace) if valid_name(stored) else None
        if res is None:
            raise _not_found(kind, name, namespace)
        return res

    def list(self, kind: str, namespace: str | None = None) -> list[Resource]:
        if kind == "IPPool":
            return [p.to_resource() for p in pools.list_pools(self.resources)]
        return self.resources.list(kind, namespace)

    def create(self, res: Resource) -> Outcome:
        if res.kind == "IPPool":
            return Outcome.of("created",
                              pools.create_pool(self.resources, _pool(res)).to_resource())
        try:
            return Outcome.of("created", self.resources.create(res))
        except ResourceAlreadyExists:
            raise CommandError(
                f"{res.kind} {_display(shown_name(res.kind, res.name), res.namespace)} already "
                "exists; use `calico-libnetwork apply` to change it") from None

    def apply(self, res: Resource) -> Outcome:
        current = self.resources.get(res.kind, res.name, res.namespace)
        if current is None:
            return self.create(res)
        wanted = _pool(res).to_resource() if res.kind == "IPPool" else copy.deepcopy(res)
        for key in _IDENTITY:
            if key in current.metadata:
                wanted.metadata[key] = current.metadata[key]
        if wanted.to_dict() == current.to_dict():
            return Outcome.of("unchanged", current)
        if res.revision is not None and res.revision != current.revision:
            raise CommandError(
                f"{res.kind} {_display(shown_name(res.kind, res.name), res.namespace)} has "
                f"changed since resourceVersion {res.revision} (now {current.revision}); "
                "get it again, or remove resourceVersion to overwrite it")
        wanted.revision = current.revision
        if res.kind == "IPPool":  # validated, cidr/blockSize kept, Felix told
            pool = pools.update_pool(self.resources, Pool.from_resource(wanted))
            return Outcome.of("updated", pool.to_resource())
        return Outcome.of("updated", self.resources.update(wanted))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> Outcome:
        if kind == "IPPool":
            try:
                pools.delete_pool(self.resources, name)
            except PoolInUse as exc:
                raise PoolInUse(f"{exc} (`calico-libnetwork pool delete {name} --force`)") \
                    from None
        elif kind == "Node":
            if not valid_name(name) or not node.remove_node(self.resources, name):
                raise _not_found(kind, name, namespace)
        else:
            stored = stored_name(kind, name)
            if not valid_name(stored) or not self.resources.delete(kind, stored, namespace):
                raise _not_found(kind, name, namespace)
        return Outcome("deleted", kind, shown_name(kind, name), namespace)


def checked(objects: list[Resource]) -> list[Resource]:
    """The objects of a manifest as they are to be written, all checked
    before the first is: a Profile or GlobalNetworkPolicy this plugin would not
    enforce is refused with the field it names (a GlobalNetworkPolicy comes
    back named default.<name>, `types` filled in), and so are a
    FelixConfiguration field the agent reads, a BGPPeer or BGPConfiguration
    the agent would not apply (datastore.bgp) and an IP pool that
    fails the checks needing no datastore.  Warnings about legal objects that
    are probably not meant go to stderr."""
    try:
        out = [bgp.validate_resource(policy.validate_resource(res)) for res in objects]
    except (policy.PolicyError, FelixConfigurationError, bgp.BGPError) as exc:
        raise CommandError(str(exc)) from None
    for res in out:
        if res.kind == "IPPool":
            pools.validate(_pool(res))
    for res in out:
        for warning in policy.policy_warnings(shown(res)):
            print(f"calico-libnetwork: warning: {warning}", file=sys.stderr)
    return out


def _pool(res: Resource) -> Pool:
    """An IPPool manifest as a Pool (defaults applied), its field types checked."""
    for key in ("ipip", "nat-outgoing"):
        if key in res.spec:
            raise InvalidPool(f"IP pool {res.name}: spec.{key} is a calicoctl v1 field; use "
                              "ipipMode / natOutgoing (or write the pool with apiVersion: v1)")
    for key, (kind, what) in _POOL_FIELD_TYPES.items():
        value = res.spec.get(key)
        # bool is an int in Python, not in YAML.
        if value is not None and (not isinstance(value, kind)
                                  or (kind is int and isinstance(value, bool))):
            raise InvalidPool(f"IP pool {res.name}: spec.{key} must be {what}, "
                              f"not {value!r}")
    return Pool.from_resource(res)


def _display(name: str, namespace: str | None) -> str:
    return f"{namespace}/{name}" if namespace else name


def _not_found(kind: str, name: str, namespace: str | None) -> CommandError:
    where = f" -n {namespace}" if namespaced(kind) and namespace else ""
    return CommandError(f"{kind} {_display(name, namespace)} not found; list them with "
                        f"`calico-libnetwork get {plural(kind)}{where}`")
