"""agent.status.peer_status against a real etcd (kernel routes read in the
test's own namespace, where the agent made none)."""

import pytest

from agent.bgp.daemon import BirdPaths, bgp_off
from agent.liveness import Heartbeat
from agent.settings import AgentSettings
from agent.status import bgp_status, peer_status
from datastore.etcd import Etcd
from tests.agent.cluster import affinity_record, node_record


@pytest.fixture
def etcd(etcd_clean):
    client = Etcd(etcd_clean.endpoints)
    yield client
    client.close()


def test_peers_their_addresses_liveness_and_unprogrammed_routes(etcd):
    for key, value in (node_record("h1", "10.0.0.1/24"),
                       node_record("h2", "10.0.0.2/24", address6="fd00::2/64"),
                       node_record("h3", "10.0.0.3/24", "192.168.3.1", "66:00:00:00:00:03"),
                       affinity_record("h2", "192.168.2.0/26"),
                       affinity_record("h2", "fd00:1::40/122"),
                       affinity_record("h1", "192.168.1.0/26")):
        etcd.put(key, value)
    Heartbeat(etcd, "h2", "10.0.0.2/24", 3.0).beat()
    peers = peer_status(etcd, "h1")
    assert [p["name"] for p in peers] == ["h2", "h3"]
    h2, h3 = peers
    assert h2 == {"name": "h2", "ipv4Address": "10.0.0.2/24", "ipv6Address": "fd00::2/64",
                  "vxlanTunnelAddr": None, "alive": True,
                  "blocks": [{"cidr": "192.168.2.0/26", "route": None},
                             {"cidr": "fd00:1::40/122", "route": None}],
                  "routesProgrammed": False}
    assert (h3["alive"], h3["ipv6Address"], h3["vxlanTunnelAddr"], h3["blocks"],
            h3["routesProgrammed"]) == (False, None, "192.168.3.1", [], True)


def test_bgp_status_is_what_the_agent_wrote(tmp_path):
    settings = AgentSettings("h1", run_dir=str(tmp_path))
    assert bgp_status(settings) == {"bird": "unknown"}  # no agent ran here
    bgp_off(BirdPaths(str(tmp_path)), "vxlan")
    assert bgp_status(settings) == {"backend": "vxlan", "bird": "off"}
