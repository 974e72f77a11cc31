"""HostEndpoint, Calico's way to put a host's own interfaces under the same
policies and CLI as workloads (the "protect hosts" guide): a typed model and
its validation, for the CLI before it writes and for the agent as it reads.

A host endpoint names its interface (`interfaceName`, `"*"` for every
interface of the host), or leaves it to `expectedIPs`: then it is the
endpoint of each interface holding one of them, as in Felix.  `expectedIPs`
are also the addresses policies' selectors see for it.  Named ports
(`ports`) are refused: policies here match port numbers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from datastore.policy import _check_metadata, _Checker, _labels
from datastore.resources import Resource, valid_name

HOST_ENDPOINT = "HostEndpoint"
ALL_INTERFACES = "*"
_INTERFACE_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")  # libcalico-go's validator


@dataclass(frozen=True)
class HostEndpoint:
    name: str
    node: str
    interface: str  # an interface name, ALL_INTERFACES, or "": by expected_ips
    expected_ips: tuple[str, ...]
    labels: dict[str, str]
    profiles: tuple[str, ...]


def host_endpoint_from_resource(res: Resource) -> HostEndpoint:
    """The HostEndpoint res describes; PolicyError naming the field if it is
    invalid or asks for what this plugin does not do."""
    c = _Checker(HOST_ENDPOINT, res.name)
    _check_metadata(c, res)
    if not valid_name(res.name):
        c.fail("metadata.name", "must be a DNS-1123 subdomain: lower-case letters, digits, "
                                "'-' and '.', at most 253 characters")
    labels = _labels(c, "metadata.labels", res.metadata.get("labels"))
    spec = c.mapping("spec", res.spec)
    c.fields("spec", spec, ("node", "interfaceName", "expectedIPs", "profiles", "ports"))
    node = spec.get("node")
    if not isinstance(node, str) or not valid_name(node):
        c.fail("spec.node", "is required: the Calico node name of the host it belongs to")
    expected = tuple(_address(c, f"spec.expectedIPs[{i}]", a) for i, a in
                     enumerate(c.sequence("spec.expectedIPs", spec.get("expectedIPs"))))
    interface = spec.get("interfaceName") or ""
    if not interface and not expected:
        c.fail("spec", "needs interfaceName (\"*\" for every interface of the host) or "
                       "expectedIPs (the addresses of the interface)")
    if interface and interface != ALL_INTERFACES and (not isinstance(interface, str)
                                                      or not _INTERFACE_RE.match(interface)):
        c.fail("spec.interfaceName", f"{interface!r} is not an interface name (at most 15 "
                                     "letters, digits, '_', '.' and '-') nor \"*\"")
    profiles = c.sequence("spec.profiles", spec.get("profiles"))
    for i, profile in enumerate(profiles):
        if not isinstance(profile, str) or not valid_name(profile):
            c.fail(f"spec.profiles[{i}]", f"{profile!r} is not a profile name")
    if c.sequence("spec.ports", spec.get("ports")):
        c.fail("spec.ports", "named ports are not supported (policies here match port "
                             "numbers); remove it")
    return HostEndpoint(res.name, node, interface, expected, labels, tuple(profiles))


def _address(c: _Checker, path: str, value) -> str:
    try:
        if isinstance(value, str):
            return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    c.fail(path, f"{value!r} is not an IP address")
