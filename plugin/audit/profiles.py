"""The Profiles against the networks: a Profile this plugin made for a
network (ingress from the network's endpoints, egress allowed, its label
applied) that no network uses any more, on any host: no network record
carries its name (or, as older versions named them, its id) and no
WorkloadEndpoint lists it.  Profiles a user wrote are never touched."""

from driver import endpoints as ep
from plugin.audit.findings import Finding, RepairRefused, fixable
from plugin.audit.layers import ETCD, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD,)


def check(layers: Layers, tools: Tools, grace) -> list[Finding]:
    used = {p for w in layers.all_weps for p in w.spec.get("profiles") or ()}
    used |= {ep.profile_name(n.name) for n in layers.networks if n.name}
    used |= {n.id for n in layers.networks}
    return [fixable("profile-unused",
                    f"Profile {p.name} belongs to no network any more",
                    "deletes it", lambda p=p: _delete(tools, p))
            for p in layers.profiles
            if p.name not in used and _ours(p) and grace.old_enough(p)]


def _ours(profile) -> bool:
    return profile.spec == ep.network_profile(profile.name).spec


def _delete(tools: Tools, profile) -> None:
    """Delete it as read (compare-and-swap), unless an endpoint lists it now."""
    if any(profile.name in (w.spec.get("profiles") or ())
           for w in tools.resources.list("WorkloadEndpoint")):
        raise RepairRefused(f"an endpoint uses Profile {profile.name} now; left alone")
    if not tools.resources.delete("Profile", profile.name, revision=profile.revision):
        raise RepairRefused(f"Profile {profile.name} changed meanwhile; left alone")
