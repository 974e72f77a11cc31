"""One read of every layer the audit compares, each read once and whole
(one etcd range per prefix, one netlink dump per kind, one dockerd inspect
per Calico network), so a node with a thousand endpoints is audited in well
under two seconds.  A layer that cannot be read is recorded with the reason
and left None: the checks compare the rest."""

import logging
from dataclasses import dataclass, field
from functools import cached_property

from netaddr import IPAddress

from datastore.errors import DatastoreError
from datastore.resources import Resource, Resources
from driver import dataplane
from driver import endpoints as ep
from driver.docker_api import Attached, DockerApi
from driver.errors import DockerUnavailable
from driver.networks import Network, Networks
from ipam.blocks import (BLOCKS_PREFIX, HANDLES_KEY_PREFIX, IPAM_PREFIX, AllocationBlock,
                         affinity_state, handle_blocks, parse_affinity_key)
from ipam.store import Affinity
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

DOCKERD, ETCD, KERNEL = "dockerd", "etcd", "kernel"


@dataclass(frozen=True)
class DockerEndpoint:
    """An endpoint dockerd holds on one of this node's Calico networks."""
    endpoint_id: str
    network_id: str
    network_name: str | None
    attached: Attached

    @property
    def container(self) -> str:
        return self.attached.name


@dataclass(frozen=True)
class Handle:
    counts: dict[str, int]  # block CIDR -> addresses
    revision: int


@dataclass
class Layers:
    node: str
    unread: dict[str, str] = field(default_factory=dict)  # layer -> why it could not be read
    # dockerd
    docker: dict[str, DockerEndpoint] | None = None  # endpoint id -> endpoint
    # etcd
    weps: list[Resource] | None = None  # this node's WorkloadEndpoints
    all_weps: list[Resource] | None = None  # every node's
    blocks: list[tuple[str, AllocationBlock, int]] | None = None
    handles: dict[str, Handle] | None = None
    affinities: list[Affinity] | None = None
    nodes: dict[str, Resource] | None = None
    profiles: list[Resource] | None = None
    networks: list[Network] | None = None
    # kernel
    links: set[str] | None = None  # cali links
    routes: dict[str, str] | None = None  # address -> cali link

    @cached_property
    def allocations(self) -> dict[IPAddress, tuple[str | None, dict]]:
        """Every allocated address -> (handle id, attributes), from the blocks."""
        found = {}
        for _, block, _ in self.blocks or ():
            for ordinal, index in enumerate(block.allocations):
                if index is not None:
                    ip = block.ip(ordinal)
                    found[ip] = block.allocation(ip)
        return found

    def handle_addresses(self, handle_id: str) -> list[IPAddress]:
        return [ip for ip, (handle, _) in self.allocations.items() if handle == handle_id]

    def readable(self, *layers: str) -> bool:
        return not any(layer in self.unread for layer in layers)

    def docker_addresses(self) -> set[IPAddress]:
        return {a for e in (self.docker or {}).values()
                for a in ep.addresses(e.attached.ip_networks)}


def read(node: str, resources: Resources | None, docker: DockerApi | None,
         etcd_error: str | None = None) -> Layers:
    layers = Layers(node)
    # Kernel, then etcd, then dockerd: Join makes a veth after its
    # WorkloadEndpoint exists, so every link read has its record read too;
    # what a container starting meanwhile shows only in dockerd is checked
    # again by the repair (a create-only write).
    _read_kernel(layers)
    if etcd_error is not None:
        layers.unread[ETCD] = etcd_error
    else:
        _read_etcd(layers, resources)
    _read_docker(layers, docker)
    return layers


def _read_etcd(layers: Layers, resources: Resources) -> None:
    etcd = resources.etcd
    try:
        # IPAM in one range, so blocks and handles are of one revision;
        # before the endpoints (an endpoint created in between is then
        # seen) and the Nodes (a node registers before it claims a block).
        kvs, _ = etcd.get_prefix(IPAM_PREFIX)
        layers.blocks, layers.handles, layers.affinities = [], {}, []
        for kv in kvs:
            if kv.key.startswith(BLOCKS_PREFIX):
                layers.blocks.append((kv.key, AllocationBlock.from_json(kv.value),
                                      kv.mod_revision))
            elif kv.key.startswith(HANDLES_KEY_PREFIX):
                layers.handles[kv.key[len(HANDLES_KEY_PREFIX):]] = Handle(
                    handle_blocks(kv.value), kv.mod_revision)
            elif parse_affinity_key(kv.key):
                layers.affinities.append(Affinity(*parse_affinity_key(kv.key),
                                                  affinity_state(kv.value), kv.mod_revision))
        layers.all_weps = resources.list("WorkloadEndpoint")
        layers.weps = [w for w in layers.all_weps
                       if w.spec.get("node") == layers.node and w.namespace == ep.NAMESPACE]
        layers.nodes = {n.name: n for n in resources.list("Node")}
        layers.profiles = resources.list("Profile")
        layers.networks = Networks(etcd).list()
    except DatastoreError as exc:
        layers.unread[ETCD] = str(exc)
        layers.blocks = layers.handles = layers.affinities = layers.weps = None
        layers.all_weps = layers.nodes = layers.profiles = layers.networks = None


def _read_docker(layers: Layers, docker: DockerApi | None) -> None:
    """This node's Calico networks: those etcd records for it or its
    endpoints name, and those whose driver is called calico."""
    if docker is None:
        layers.unread[DOCKERD] = "no DOCKER_HOST"
        return
    known = {n.id for n in layers.networks or () if n.node == layers.node}
    known |= {w.annotations.get(ep.NETWORK_ID_ANNOTATION) for w in layers.weps or ()}
    try:
        drivers = docker.network_drivers()
        found = {}
        for network_id, driver in drivers.items():
            if network_id in known or "calico" in driver.split(":")[0]:
                name, attached = docker.attached(network_id)
                for endpoint_id, info in attached.items():
                    found[endpoint_id] = DockerEndpoint(endpoint_id, network_id, name, info)
        layers.docker = found
    except DockerUnavailable as exc:
        layers.unread[DOCKERD] = str(exc)


def _read_kernel(layers: Layers) -> None:
    try:
        layers.links = dataplane.link_names(ep.HOST_IF_PREFIX)
        layers.routes = dataplane.host_routes(ep.HOST_IF_PREFIX)
    except KernelError as exc:
        layers.unread[KERNEL] = str(exc)
        layers.links = layers.routes = None
