"""The WorkloadEndpoint record the agent's views read: what policy needs
(node, interface, addresses, labels, profiles), what names need (the
network's name and DNS names the plugin annotates) and the host ports it
publishes, parsed once."""

import json
from dataclasses import dataclass
from sys import intern

from datastore import ports
from datastore.annotations import DNS_NAMES, NETWORK_NAME
from datastore.resources import Resource


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    node: str
    interface: str
    addresses: tuple[str, ...]  # ipNetworks without their prefix length
    labels: tuple[tuple[str, str], ...]  # its own, sorted
    profiles: tuple[str, ...]
    network_name: str | None  # the Docker network's name, when the plugin wrote it
    dns_names: tuple[str, ...]  # as Docker gave them
    published: tuple[ports.PortBinding, ...] = ()  # sorted

    @classmethod
    def from_resource(cls, res: Resource) -> "WorkloadEndpoint":
        spec = res.spec
        annotations = res.metadata.get("annotations") or {}
        try:
            names = json.loads(annotations[DNS_NAMES]) if DNS_NAMES in annotations else []
        except (ValueError, TypeError):  # names are optional: the endpoint stays
            names = []
        if not isinstance(names, list):
            names = []
        labels = res.metadata.get("labels") or {}
        # What many endpoints share (their node, labels, profiles, network)
        # is held once: 30,000 endpoints' copies were 19 MB of the agent.
        return cls(_shared(spec.get("node") or ""), spec.get("interfaceName") or "",
                   tuple(str(n).split("/")[0] for n in spec.get("ipNetworks") or ()),
                   tuple(sorted((intern(k), intern(str(v))) for k, v in labels.items())),
                   tuple(_shared(p) for p in spec.get("profiles") or ()),
                   _shared(annotations.get(NETWORK_NAME)),
                   tuple(n for n in names if isinstance(n, str)),
                   ports.published(res.name, annotations))


def _shared(text) -> str:
    """One object for equal strings (interned ones are freed when unused);
    what is not a string (a malformed record) as it is."""
    return intern(text) if type(text) is str else text
