"""The WorkloadEndpoints against the kernel: a running container's host
end gone (nothing but a restart gives it an interface again), its host
route gone (put back), and a cali interface no endpoint owns (deleted)."""

from driver import dataplane
from driver import endpoints as ep
from plugin.audit.findings import Finding, RepairRefused, advised, fixable
from plugin.audit.layers import DOCKERD, ETCD, KERNEL, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD, KERNEL)


def check(layers: Layers, tools: Tools, _grace) -> list[Finding]:
    found = []
    docker = layers.docker if layers.readable(DOCKERD) else None
    for wep in layers.weps:
        endpoint_id, ifname = wep.spec.get("endpoint"), wep.spec.get("interfaceName")
        held = (docker or {}).get(endpoint_id)
        if docker is not None and held is None:
            continue  # a ghost: docker_endpoints deletes it whole
        who = f"container {held.container}" if held else f"WorkloadEndpoint {wep.name}"
        if ifname not in layers.links:
            restart = f"`docker restart {held.container}`" if held else \
                "`docker restart` its container"
            found.append(advised(
                "interface-missing", f"{who} has lost its interface {ifname} on this host",
                f"run {restart} to give it a new one", held and held.container))
            continue
        missing = [a for a in ep.addresses(wep.spec.get("ipNetworks"))
                   if layers.routes.get(str(a)) != ifname]
        if missing and held:
            found.append(fixable(
                "route-missing",
                f"{who} has no host route to {', '.join(map(str, missing))} via {ifname}",
                "puts the route back",
                lambda i=ifname, m=missing: _restore(i, m), container=held.container))
    found += _strays(layers, tools, docker)
    return found


def _strays(layers: Layers, tools: Tools, docker) -> list[Finding]:
    owned = {w.spec.get("interfaceName") for w in layers.weps}
    if docker is not None:
        owned |= {ep.host_ifname(e) for e in docker}
    found = []
    for ifname in sorted(layers.links - owned):
        if not ep.is_host_ifname(ifname):
            continue
        message = f"interface {ifname} belongs to no endpoint"
        if docker is None:
            found.append(advised("interface-stray", message, "run check again when dockerd "
                                 f"answers ({layers.unread[DOCKERD]})"))
        else:
            found.append(fixable("interface-stray", message, "deletes it",
                                 lambda i=ifname: _delete_stray(tools, i)))
    return found


def _restore(ifname: str, missing) -> None:
    v4 = [str(a) for a in missing if a.version == 4]
    v6 = [str(a) for a in missing if a.version == 6]
    if not dataplane.restore_routes(ifname, v4, v6):
        raise RepairRefused(f"{ifname} is gone now")


def _delete_stray(tools: Tools, ifname: str) -> None:
    """Delete the veth unless an endpoint of this node owns it now (one made
    since the audit read etcd)."""
    weps = ep.node_weps(tools.resources, tools.node)
    if any(w.spec.get("interfaceName") == ifname for w in weps):
        raise RepairRefused(f"an endpoint owns {ifname} now; left alone")
    dataplane.remove_veth(ifname)
