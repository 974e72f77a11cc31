"""What the follower hands its views: one Kind per record it reads, each
with the one prefix its keys live under and the one parser of its values.

A key is parsed once, whoever subscribes to its kind, and every view gets
the same record: records are read-only.  An unreadable value is logged
once, here, and counts as the kind's `unreadable` (absent, for most).

The kinds of the resources other packages own (IPPool, the IPAM blocks
and affinities) are declared there with the same Kind.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from netaddr import AddrFormatError

from datastore.bgp import BGPConfiguration, BGPError, BGPPeer
from datastore.felix_configuration import FelixSettings
from datastore.host_endpoint import host_endpoint_from_resource
from datastore.node import Node
from datastore.policy import INVALID_PROFILE, policy_from_resource, profile_from_resource
from datastore.resources import Resource, kind_prefix
from datastore.workload_endpoint import WorkloadEndpoint

LOG = logging.getLogger(__name__)

# What a parser raises for a value it cannot read (PolicyError and
# FelixConfigurationError are ValueErrors).
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, AddrFormatError)


@dataclass(frozen=True, eq=False)
class Kind:
    name: str
    prefix: str
    # (key, value, mod_revision) -> the record; None: a key under the
    # prefix that holds no such record
    parse: Callable[[str, bytes, int], Any]
    errors: tuple[type[Exception], ...] = ()  # unreadable, beyond UNREADABLE
    unreadable: Any = None  # what an unreadable value counts as
    # the log's words for it: what is enforced says it is not
    unreadable_log: str = "ignoring unreadable"

    def __repr__(self):
        return f"Kind({self.name})"


def resource_kind(kind: str, build: Callable[[Resource], Any], **options) -> Kind:
    """The Kind of a v3 resource, parsed by `build` from its Resource."""
    return Kind(kind, kind_prefix(kind),
                lambda _key, value, revision: build(Resource.from_json(value, revision)),
                **options)


def parse(kind: Kind, key: str, value: bytes | None, revision: int = 0):
    """The record of one key (None: deleted, or not a record of the kind)."""
    if value is None:
        return None
    try:
        return kind.parse(key, value, revision)
    except UNREADABLE + kind.errors as exc:
        LOG.warning("%s %s: %s", kind.unreadable_log, key, exc)
        return kind.unreadable


_POLICY = "not enforcing"
WORKLOAD_ENDPOINTS = resource_kind("WorkloadEndpoint", WorkloadEndpoint.from_resource)
HOST_ENDPOINTS = resource_kind("HostEndpoint", host_endpoint_from_resource,
                               unreadable_log=_POLICY)
# A listed Profile that cannot be enforced denies (calico-policy.md §4.3).
PROFILES = resource_kind("Profile", profile_from_resource, unreadable=INVALID_PROFILE,
                         unreadable_log=_POLICY)
GLOBAL_NETWORK_POLICIES = resource_kind("GlobalNetworkPolicy", policy_from_resource,
                                        unreadable_log=_POLICY)
# An invalid field counts as unset: the next source decides.
FELIX_CONFIGURATIONS = resource_kind("FelixConfiguration", FelixSettings.from_resource,
                                     unreadable=FelixSettings(), unreadable_log=_POLICY)
NODES = resource_kind("Node", Node.from_resource)
# A BGP object that cannot be applied counts as absent (the CLI refuses it).
BGP_PEERS = resource_kind("BGPPeer", BGPPeer.from_resource, errors=(BGPError,))
BGP_CONFIGURATIONS = resource_kind("BGPConfiguration", BGPConfiguration.from_resource,
                                   errors=(BGPError,))
