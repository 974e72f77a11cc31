"""check's published-ports comparison (plugin/audit/published.py) in a
namespace of its own: the table the agent writes for this node's endpoints
against the endpoints in a real etcd, a binding without its container and
a container's port the table lacks found, nothing when they agree."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import netns as pyroute2_netns

from agent import nftables
from agent.published import script
from datastore.ports import PortBinding
from datastore.workload_endpoint import WorkloadEndpoint
from driver import endpoints as ep
from plugin.audit import published
from plugin.audit.layers import Layers
from plugin.audit.tools import Tools
from tests.lab import Lab

pytestmark = pytest.mark.require_root

NODE = "h1"
WEB = ep.workload_endpoint(NODE, "a" * 64, "n" * 64, ["10.65.0.5/32", "fd00::5/128"],
                           ep.DEFAULT_MAC, ["net1"],
                           published=[PortBinding("tcp", 8080, 80),
                                      PortBinding("udp", 5353, 53, "127.0.0.1")])
GONE = ep.workload_endpoint(NODE, "b" * 64, "n" * 64, ["10.65.0.6/32"], ep.DEFAULT_MAC,
                            ["net1"], published=[PortBinding("tcp", 9090, 90)])


@pytest.fixture
def inside():
    """A thread in a namespace of its own (its libnftables context acts there)."""
    with Lab() as lab:
        ns = lab.netns("audit-ports")
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as thread:
            yield thread


def findings(inside, resources):
    layers = Layers(NODE, weps=[w for w in resources.list("WorkloadEndpoint")])
    tools = Tools(NODE, resources, None)
    return inside.submit(published.check, layers, tools, None).result()


def test_a_binding_without_its_container_and_a_missing_one_are_found(inside, resources):
    resources.create(WEB)
    # No table (no agent ran here) while a container publishes: said once.
    assert [f.kind for f in findings(inside, resources)] == ["published-table"]
    inside.submit(nftables.run, script([WorkloadEndpoint.from_resource(r)
                                        for r in (WEB, GONE)])).result()
    found = findings(inside, resources)
    assert [(f.kind, f.message) for f in found] == [
        ("published-stray", "host port 9090/tcp is forwarded to 10.65.0.6:90, which no "
                            "container of this node publishes it for")]
    inside.submit(nftables.run, script([WorkloadEndpoint.from_resource(GONE)])).result()
    found = findings(inside, resources)
    assert sorted(f.kind for f in found) == ["published-missing"] * 3 + ["published-stray"]
    assert any("127.0.0.1:5353/udp -> 53" in f.message for f in found)
    inside.submit(nftables.run, script([WorkloadEndpoint.from_resource(WEB)])).result()
    assert findings(inside, resources) == []
