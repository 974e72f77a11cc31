"""Workload endpoints and profiles: the Calico v3 records for Docker's
endpoints and networks (calico-datastore.md §2.3, §2.4, §7)."""

import functools
import hashlib
import json
import re

import netaddr

from datastore import annotations
from datastore import ports
from datastore.resources import Resource, Resources, valid_name

ORCHESTRATOR = "libnetwork"
NAMESPACE = "libnetwork"
NETWORK_ID_ANNOTATION = "libnetwork.projectcalico.org/network-id"
SANDBOX_ANNOTATION = "libnetwork.projectcalico.org/sandbox"
NETWORK_NAME_ANNOTATION = annotations.NETWORK_NAME
DNS_NAMES_ANNOTATION = annotations.DNS_NAMES
HOST_IF_PREFIX = "cali"
TEMP_IF_PREFIX = "temp"
LABEL_PREFIX = "org.projectcalico.label."
# Labels dockerd gives a Swarm task's container (the stack's comes from
# `docker stack deploy`), copied to its endpoint whatever LABEL_ENDPOINTS says:
# Docker sets them, not the user, and they name the service.
SWARM_LABELS = ("com.docker.swarm.service.name", "com.docker.swarm.service.id",
                "com.docker.stack.namespace")
DEFAULT_MAC = "ee:ee:ee:ee:ee:ee"


def host_ifname(endpoint_id: str) -> str:
    return HOST_IF_PREFIX + endpoint_id[:11]


def is_host_ifname(name: str) -> bool:
    """Names host_ifname() makes: cali + 11 hex digits (not e.g. cali0)."""
    return bool(re.fullmatch(HOST_IF_PREFIX + "[0-9a-f]{11}", name))


def temp_ifname(endpoint_id: str) -> str:
    return TEMP_IF_PREFIX + endpoint_id[:11]


def wep_name(node: str, endpoint_id: str) -> str:
    """<node>-libnetwork-libnetwork-<endpoint>, '-' inside a segment doubled."""
    return node_wep_prefix(node) + endpoint_id.replace("-", "--")


def node_wep_prefix(node: str) -> str:
    """What the names of node's WorkloadEndpoints (and only theirs) start with."""
    return "".join(s.replace("-", "--") + "-" for s in (node, ORCHESTRATOR, ORCHESTRATOR))


def node_weps(resources: Resources, node: str) -> list[Resource]:
    """The WorkloadEndpoints of node (a read of its own names only)."""
    return [w for w in resources.list("WorkloadEndpoint", NAMESPACE, node_wep_prefix(node))
            if w.spec.get("node") == node]


def on_network(resources: Resources, network_id: str) -> bool:
    """Whether a WorkloadEndpoint of any node is on the network (a read of all)."""
    return any(w.metadata.get("annotations", {}).get(NETWORK_ID_ANNOTATION) == network_id
               for w in resources.list("WorkloadEndpoint", NAMESPACE))


def workload_endpoint(node, endpoint_id, network_id, ip_networks, mac, profiles,
                      network_name=None, published=()) -> Resource:
    notes = {NETWORK_ID_ANNOTATION: network_id}
    if network_name:
        notes[NETWORK_NAME_ANNOTATION] = network_name
    if published:
        notes[annotations.PUBLISHED_PORTS] = ports.dumps(published)
    return Resource(
        kind="WorkloadEndpoint",
        name=wep_name(node, endpoint_id),
        namespace=NAMESPACE,
        metadata={
            "labels": {"projectcalico.org/namespace": NAMESPACE,
                       "projectcalico.org/orchestrator": ORCHESTRATOR},
            "annotations": notes,
        },
        spec={
            "orchestrator": ORCHESTRATOR,
            "workload": ORCHESTRATOR,
            "node": node,
            "endpoint": endpoint_id,
            "ipNetworks": ip_networks,
            "profiles": profiles,
            "interfaceName": host_ifname(endpoint_id),
            "mac": mac,
        },
    )


def addresses(ip_networks) -> list[netaddr.IPAddress]:
    """The addresses of a WorkloadEndpoint's ipNetworks (unparsable ones left out)."""
    found = [_address(str(net)) for net in ip_networks or ()]
    return [a for a in found if a is not None]


@functools.lru_cache(maxsize=65536)
def _address(ip_network: str) -> netaddr.IPAddress | None:
    # Cached: `check` reads the same lists several times, and netaddr takes
    # some 0.1 ms a parse.  Callers must not change the shared result.
    try:
        return netaddr.IPNetwork(ip_network).ip
    except (netaddr.AddrFormatError, ValueError):
        return None


def endpoint_addresses(weps) -> set[netaddr.IPAddress]:
    """The addresses the WorkloadEndpoints list."""
    return {a for wep in weps for a in addresses(wep.spec.get("ipNetworks"))}


def published_ports(wep: Resource) -> tuple[ports.PortBinding, ...]:
    """The host ports the endpoint publishes (none when its annotation is unreadable)."""
    return ports.published(wep.name, wep.annotations)


def container_labels(labels: dict, prefixed: bool) -> dict:
    """The endpoint labels a container's Docker labels give: a Swarm task's
    service and stack (SWARM_LABELS, as they are: what a policy selects a
    service by), and, when `prefixed`, org.projectcalico.label.X=v as X=v."""
    out = {k: v for k, v in labels.items() if k in SWARM_LABELS and v}
    if prefixed:
        out.update((k[len(LABEL_PREFIX):], v) for k, v in labels.items()
                   if k.startswith(LABEL_PREFIX) and len(k) > len(LABEL_PREFIX))
    return out


def dns_names(names) -> list[str]:
    """Docker's names as DNS names: lowercased (DNS is case-insensitive),
    without a trailing dot, in order, without repeats; a name no question
    can carry (an empty label, a label over 63 or a name over 253 bytes) is
    left out.  Docker's '_' is kept: its embedded DNS answers it too."""
    out = []
    for name in names:
        name = name.strip().rstrip(".").lower()
        if name and len(name) <= 253 and all(0 < len(p) <= 63 for p in name.split(".")) \
                and name not in out:
            out.append(name)
    return out


def names_annotations(network_name: str | None, names) -> dict:
    """The annotations that carry an endpoint's network name and DNS names."""
    written = {DNS_NAMES_ANNOTATION: json.dumps(dns_names(names), separators=(",", ":"))}
    if network_name:
        written[NETWORK_NAME_ANNOTATION] = network_name
    return written


def profile_name(network_name: str) -> str:
    """The Calico profile (and label) name for a Docker network name.

    Docker allows names Calico does not (capitals, '_', long names); those get
    a stable, readable form with a hash suffix so that every host maps the same
    network name to the same profile.
    """
    if valid_name(network_name) and len(network_name) <= 63:
        return network_name
    base = re.sub(r"[^a-z0-9.-]+", "-", network_name.lower()).strip("-.")[:50] or "net"
    digest = hashlib.sha256(network_name.encode()).hexdigest()[:8]
    return f"{base}-{digest}"


def network_profile(name: str) -> Resource:
    """Ingress allowed from endpoints on the same network, egress allowed.

    labelsToApply gives every endpoint with this profile the label the ingress
    selector matches (Calico's v2 'tag' behaviour, as the v3 upgrade converter
    writes it)."""
    return Resource(
        kind="Profile",
        name=name,
        spec={
            "ingress": [{"action": "Allow", "source": {"selector": f"has({name})"},
                         "destination": {}}],
            "egress": [{"action": "Allow", "source": {}, "destination": {}}],
            "labelsToApply": {name: ""},
        },
    )
