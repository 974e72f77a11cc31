"""dockerd against the WorkloadEndpoints: a container dockerd runs on a
Calico network whose WorkloadEndpoint is gone (policy and names on the
other hosts no longer see it), and a WorkloadEndpoint of this node whose
endpoint dockerd no longer holds (a ghost: its container went while the
plugin was down), including one that claims an address a running container
holds now."""

from datastore.errors import ResourceAlreadyExists
from driver import dataplane
from driver import endpoints as ep
from plugin.audit.findings import Finding, RepairRefused, fixable
from plugin.audit.layers import DOCKERD, ETCD, DockerEndpoint, Layers
from plugin.audit.tools import Tools

NEEDS = (DOCKERD, ETCD)


def check(layers: Layers, tools: Tools, grace) -> list[Finding]:
    found = []
    listed = {w.spec.get("endpoint"): w for w in layers.weps}
    for endpoint_id, held in sorted(layers.docker.items(), key=lambda e: e[1].container):
        if endpoint_id not in listed:
            found.append(fixable(
                "endpoint-missing",
                f"container {held.container} has no WorkloadEndpoint (endpoint "
                f"{endpoint_id[:12]} on network {held.network_name}): other hosts' policy "
                "and names do not see it",
                "rewrites it from what dockerd holds", lambda h=held: _rewrite(tools, h),
                container=held.container))
    held_by = {a: e.container for e in layers.docker.values()
               for a in ep.addresses(e.attached.ip_networks)}
    for wep in layers.weps:
        if wep.spec.get("endpoint") not in layers.docker and grace.old_enough(wep):
            found.append(_ghost(wep, layers, tools, held_by))
    return found


def _ghost(wep, layers: Layers, tools: Tools, held_by) -> Finding:
    mine = ep.addresses(wep.spec.get("ipNetworks"))
    others = {a for w in layers.all_weps if w.name != wep.name
              for a in ep.addresses(w.spec.get("ipNetworks"))}
    taken = {a: held_by[a] for a in mine if a in held_by}
    free = [a for a in mine if a not in taken and a not in others]
    # Released by handle, as dockerd's ReleaseAddress would, so the handle
    # goes with them; a handle that also holds an address in use is kept.
    handles = {layers.allocations.get(a, (None, {}))[0] for a in free} - {None}
    handles = {h for h in handles if set(layers.handle_addresses(h)) <= set(free)}
    free = [a for a in free if layers.allocations.get(a, (None, {}))[0] in handles]
    message = (f"WorkloadEndpoint {wep.name} ({', '.join(map(str, mine)) or 'no address'}) "
               "belongs to no container dockerd has")
    if taken:
        message += "; " + ", ".join(f"{a} is running container {c}'s"
                                    for a, c in sorted(taken.items()))
    repair = "deletes it and its interface"
    if free:
        repair += f", and releases {', '.join(map(str, free))}"
    if taken:
        repair += f", keeping {', '.join(map(str, sorted(taken)))}"
    return fixable("endpoint-ghost", message, repair,
                   lambda: _delete_ghost(tools, wep, handles))


def _rewrite(tools: Tools, held: DockerEndpoint) -> None:
    """Create the WorkloadEndpoint as CreateEndpoint and Join wrote it
    (create-only: one written meanwhile is kept).  The host ports it
    published are not known to dockerd's network view and stay unwritten."""
    profiles = []
    if tools.create_profiles and held.network_name:
        profiles = [ep.profile_name(held.network_name)]
        try:
            tools.resources.create(ep.network_profile(profiles[0]))
        except ResourceAlreadyExists:
            pass
    wep = ep.workload_endpoint(tools.node, held.endpoint_id, held.network_id,
                               list(held.attached.ip_networks),
                               (held.attached.mac or ep.DEFAULT_MAC).lower(), profiles,
                               held.network_name)
    if not held.attached.container_id.startswith(("ep-", "lb-")):
        container = tools.docker.container(held.network_id, held.attached.container_id)
        wep.labels.update(ep.container_labels(container.labels, tools.label_endpoints))
        wep.annotations.update(ep.names_annotations(container.network, container.dns_names))
        if container.sandbox_key:
            wep.annotations[ep.SANDBOX_ANNOTATION] = container.sandbox_key
    try:
        tools.resources.create(wep)
    except ResourceAlreadyExists:
        pass


def _delete_ghost(tools: Tools, wep, handles) -> None:
    """Delete the endpoint (with its sandbox claim, in one compare-and-swap),
    its veth, and release the handles whose addresses no container holds.
    dockerd is asked again first: an endpoint it shows now is left alone."""
    network_id = wep.annotations.get(ep.NETWORK_ID_ANNOTATION)
    if network_id and wep.spec.get("endpoint") in tools.docker.endpoint_ids(network_id):
        raise RepairRefused("dockerd holds the endpoint now; left alone")
    tools.sandboxes.remove_endpoint(wep, None)
    ifname = wep.spec.get("interfaceName")
    if ifname and ep.is_host_ifname(ifname):
        dataplane.remove_veth(ifname)
    for handle in sorted(handles):
        tools.ipam.release_by_handle(handle)
