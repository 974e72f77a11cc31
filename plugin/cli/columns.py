"""calicoctl's table columns for each kind, plain and wide (`-o wide`)."""

import json
from collections.abc import Callable

from datastore.annotations import DNS_NAMES
from datastore.resources import Resource


def _spec(*path, default=None) -> Callable[[Resource], object]:
    def read(res: Resource):
        value = res.spec
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return default if value is None else value
    return read


def _nats(res: Resource) -> list[str]:
    return [f"{n.get('internalIP')}->{n.get('externalIP')}"
            for n in res.spec.get("ipNATs") or []]


def _dns_names(res: Resource) -> list[str]:
    """The names the node agents answer for the endpoint (agent/names)."""
    try:
        names = json.loads((res.metadata.get("annotations") or {}).get(DNS_NAMES) or "[]")
    except ValueError:
        return []
    return names if isinstance(names, list) else []


NAME = ("NAME", lambda res: res.name)
_CIDR = ("CIDR", _spec("cidr"))
_SELECTOR = ("SELECTOR", _spec("nodeSelector", default="all()"))
_WEP = [("WORKLOAD", _spec("workload")), ("NODE", _spec("node")),
        ("NETWORKS", _spec("ipNetworks")), ("INTERFACE", _spec("interfaceName"))]


def _peer_nodes(res: Resource) -> str:
    """The local side as calicoctl shows it: a node, a selector, or everyone."""
    return res.spec.get("node") or res.spec.get("nodeSelector") or "(global)"


def _or_dash(*path) -> Callable[[Resource], object]:
    read = _spec(*path)
    return lambda res: read(res) or "-"


_BGP_PEER = [("PEERIP", _spec("peerIP")), ("NODE", _peer_nodes),
             ("ASN", _spec("asNumber", default=0))]
_BGP_CONFIGURATION = [("LOGSEVERITY", _spec("logSeverityScreen")),
                      ("MESHENABLED", _or_dash("nodeToNodeMeshEnabled")),
                      ("ASNUMBER", _or_dash("asNumber"))]

# kind -> (plain columns, wide columns)
COLUMNS = {
    "IPPool": ([NAME, _CIDR, _SELECTOR],
               [NAME, _CIDR, _SELECTOR, ("IPIPMODE", _spec("ipipMode", default="Never")),
                ("VXLANMODE", _spec("vxlanMode", default="Never")),
                ("NATOUTGOING", _spec("natOutgoing", default=False)),
                ("DISABLED", _spec("disabled", default=False)),
                ("BLOCKSIZE", _spec("blockSize"))]),
    "Node": ([NAME],
             [NAME, ("ASN", _spec("bgp", "asNumber")), ("IPV4", _spec("bgp", "ipv4Address")),
              ("IPV6", _spec("bgp", "ipv6Address"))]),
    "WorkloadEndpoint": (_WEP, [NAME, *_WEP, ("PROFILES", _spec("profiles")), ("NATS", _nats),
                                 ("DNSNAMES", _dns_names)]),
    "Profile": ([NAME], [NAME, ("LABELS", lambda res: res.metadata.get("labels"))]),
    "GlobalNetworkPolicy": ([NAME], [NAME, ("ORDER", _spec("order")),
                                     ("SELECTOR", _spec("selector"))]),
    "BGPPeer": ([NAME, *_BGP_PEER], [NAME, *_BGP_PEER]),
    "BGPConfiguration": ([NAME, *_BGP_CONFIGURATION], [NAME, *_BGP_CONFIGURATION]),
    "HostEndpoint": ([NAME, ("NODE", _spec("node"))],
                     [NAME, ("NODE", _spec("node")), ("INTERFACE", _spec("interfaceName")),
                      ("IPS", _spec("expectedIPs")), ("PROFILES", _spec("profiles"))]),
}


def table_of(kind: str, objects: list[Resource], wide: bool, with_namespace: bool):
    """(headers, rows) for objects of one kind."""
    plain, wide_columns = COLUMNS.get(kind, ([NAME], [NAME]))
    columns = wide_columns if wide else plain
    if with_namespace:
        columns = [("NAMESPACE", lambda res: res.namespace), *columns]
    return ([heading for heading, _ in columns],
            [[read(res) for _, read in columns] for res in objects])
