"""The WorkloadEndpoints (and dockerd's containers) against IPAM: an
address this plugin allocated for this node that no endpoint and no running
container has (leaked by a crash between RequestAddress and
CreateEndpoint, or a lost ReleaseAddress), and an endpoint's address IPAM
does not hold allocated (IPAM would hand it out again)."""

from netaddr import IPAddress

from driver import endpoints as ep
from ipam.leaks import leaked
from plugin.audit.findings import Finding, RepairRefused, advised, fixable
from plugin.audit.layers import DOCKERD, ETCD, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD,)


def check(layers: Layers, tools: Tools, grace) -> list[Finding]:
    found = []
    docker_read = layers.readable(DOCKERD)
    used = ep.endpoint_addresses(layers.all_weps) | layers.docker_addresses()
    leaks = [leak for leak in leaked(layers.blocks, used, grace.seconds)
             if leak.node == layers.node]
    for handle in sorted({leak.handle for leak in leaks}):
        mine = [leak.address for leak in leaks if leak.handle == handle]
        message = f"address {', '.join(mine)} is allocated (handle {handle}) to no endpoint"
        if docker_read:
            found.append(fixable("address-leaked", message, "releases it",
                                 lambda h=handle, m=mine: _release(tools, h, m)))
        else:
            found.append(advised("address-leaked", message,
                                 "run check again when dockerd answers "
                                 f"({layers.unread[DOCKERD]}): a running container may hold it"))
    for wep in layers.weps:
        held = (layers.docker or {}).get(wep.spec.get("endpoint"))
        for address in ep.addresses(wep.spec.get("ipNetworks")):
            if address not in layers.allocations:
                who = f"container {held.container}" if held else f"WorkloadEndpoint {wep.name}"
                found.append(advised(
                    "address-unallocated",
                    f"{who} uses {address}, which IPAM holds free (it may hand it out again)",
                    f"run `docker restart {held.container}`" if held
                    else "restart its container", held and held.container))
    return found


def _release(tools: Tools, handle: str, leaked) -> None:
    """Release the handle's addresses unless an endpoint lists one now."""
    now = ep.endpoint_addresses(tools.resources.list("WorkloadEndpoint"))
    held = [a for a in leaked if IPAddress(a) in now]
    if held:
        raise RepairRefused(f"an endpoint uses {', '.join(held)} now; left alone")
    tools.ipam.release_by_handle(handle)
