"""The etcd records the policy engine reads, built as the plugin and
calicoctl write them, for the policy tests that need neither etcd nor a
kernel: workload endpoints, Profiles, GlobalNetworkPolicies, Nodes and
IPPools as (key, value) pairs, and the state they add up to."""

import hashlib

from agent.policy.state import PolicyState
from datastore.resources import Resource
from driver.endpoints import host_ifname, network_profile, workload_endpoint
from tests.introspect import feed

NODE = "h1"
OTHER_NODE = "h2"


def record(res: Resource) -> tuple[str, bytes]:
    return res.key, res.to_json().encode()


def gone(rec: tuple[str, bytes]) -> tuple[str, None]:
    """The deletion of a record."""
    return rec[0], None


def endpoint_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def interface(name: str) -> str:
    """The host-side interface of endpoint `name`."""
    return host_ifname(endpoint_id(name))


def wep(name, *addresses, node=NODE, profiles=("net1",), labels=None):
    """Workload endpoint `name` (addresses default to one IPv4 address
    derived from the name); labels are its own (container) labels."""
    digest = endpoint_id(name)
    addresses = addresses or (f"10.65.{int(digest[:2], 16)}.{int(digest[2:4], 16)}",)
    networks = [a + ("/128" if ":" in a else "/32") for a in addresses]
    res = workload_endpoint(node, endpoint_id(name), "n" * 64, networks, "ee:ee:ee:ee:ee:ee",
                            list(profiles))
    res.labels.update(labels or {})
    return record(res)


def profile(name, ingress=None, egress=None, labels=None):
    """Profile `name` as the plugin writes it for a network (ingress from
    its own members, egress anywhere, label `name`), or with the rules and
    labelsToApply given."""
    res = network_profile(name)
    for key, value in (("ingress", ingress), ("egress", egress), ("labelsToApply", labels)):
        if value is not None:
            res.spec[key] = value
    return record(res)


def gnp(name, **spec):
    """GlobalNetworkPolicy `name` stored as calicoctl stores it (default.<name>)."""
    return record(Resource("GlobalNetworkPolicy", "default." + name, spec=spec))


def state_of(*records) -> PolicyState:
    state = PolicyState()
    for key, value in records:
        feed(state, key, value)
    return state


def hep(name, interface, *expected_ips, node=NODE, profiles=(), labels=None):
    """HostEndpoint `name` of `node` on `interface` ("*": all of them)."""
    spec = {"node": node, "interfaceName": interface}
    if expected_ips:
        spec["expectedIPs"] = list(expected_ips)
    if profiles:
        spec["profiles"] = list(profiles)
    return record(Resource("HostEndpoint", name, spec=spec, metadata={"labels": labels or {}}))


def felix_configuration(name, **spec):
    return record(Resource("FelixConfiguration", name, spec=spec))


def calico_node(name, address, address6=None):
    """A Node with its addresses (spec.bgp): a Calico host."""
    bgp = {"ipv4Address": address, **({"ipv6Address": address6} if address6 else {})}
    return record(Resource("Node", name, spec={"bgp": bgp}))


def ip_pool(name, cidr, **modes):
    """An IPPool; modes: ipipMode, vxlanMode."""
    return record(Resource("IPPool", name, spec={"cidr": cidr, **modes}))
