"""`docker run -p` through the HTTP face, against a real etcd: CreateEndpoint's
portmap becomes the WorkloadEndpoint's published ports; a bad entry or a
taken host port is refused with a message naming it, and nothing is written."""

import json
import socket

import pytest

from datastore.annotations import PUBLISHED_PORTS
from driver import published
from tests.plugin.support import CREATE_NETWORK, NET, NamedDocker, call, endpoint, make_client

WEPS = "/calico/resources/v3/projectcalico.org/workloadendpoints/"


def portmap(*entries):
    return {"com.docker.network.portmap": list(entries),
            "com.docker.network.endpoint.exposedports": []}


def entry(port=80, host_port=8080, host_port_end=None, proto=6, host_ip=""):
    return {"Proto": proto, "IP": "", "Port": port, "HostIP": host_ip, "HostPort": host_port,
            "HostPortEnd": host_port if host_port_end is None else host_port_end}


@pytest.fixture
def client(store):
    client = make_client(store, docker=NamedDocker())
    assert call(client, "NetworkDriver.CreateNetwork", CREATE_NETWORK)[0] == 200
    return client


def create(client, n, options):
    return call(client, "NetworkDriver.CreateEndpoint", {
        "NetworkID": NET, "EndpointID": endpoint(n), "Options": options,
        "Interface": {"Address": f"192.168.60.{n}/32", "AddressIPv6": "", "MacAddress": ""}})


def bindings(store, n):
    kv = store.get(WEPS + f"libnetwork/test--node-libnetwork-libnetwork-{endpoint(n)}")
    if kv is None:
        return None
    return json.loads(json.loads(kv.value)["metadata"]["annotations"].get(PUBLISHED_PORTS, "[]"))


def test_published_ports_are_on_the_endpoint(store, client):
    status, _ = create(client, 1, portmap(entry(80, 8080), entry(53, 5353, proto=17),
                                          entry(443, 8443, host_ip="127.0.0.1")))
    assert status == 200
    assert bindings(store, 1) == [
        {"protocol": "tcp", "hostPort": 8080, "port": 80, "hostIP": ""},
        {"protocol": "tcp", "hostPort": 8443, "port": 443, "hostIP": "127.0.0.1"},
        {"protocol": "udp", "hostPort": 5353, "port": 53, "hostIP": ""}]


def test_no_portmap_no_annotation(store, client):
    assert create(client, 1, portmap())[0] == 200
    assert create(client, 2, {})[0] == 200
    assert bindings(store, 1) == bindings(store, 2) == []


@pytest.mark.parametrize("bad, named", [
    (entry(proto=1), "protocol 1"),
    (entry(port=0), "no container port"),
    (entry(port=70000), "Port 70000"),
    (entry(host_port=9000, host_port_end=8000), "9000-8000"),
    (entry(host_ip="not-an-ip"), "HostIP 'not-an-ip'"),
    ("8080:80", "not an object"),
])
def test_a_bad_entry_is_refused_and_nothing_written(store, client, bad, named):
    status, answer = create(client, 1, portmap(entry(81, 8081), bad))
    assert status == 500 and named in answer["Err"] and "cannot publish" in answer["Err"]
    assert bindings(store, 1) is None


def test_a_port_another_endpoint_publishes_is_refused(store, client):
    assert create(client, 1, portmap(entry(80, 8080)))[0] == 200
    status, answer = create(client, 2, portmap(entry(81, 8081), entry(80, 8080)))
    assert status == 500
    assert "cannot publish port 8080/tcp" in answer["Err"]
    assert "another container on this host publishes it (8080->80/tcp)" in answer["Err"]
    assert bindings(store, 2) is None  # not half-made: 8081 is not kept either
    # Another protocol, or another address than a binding of one address, is free.
    assert create(client, 3, portmap(entry(80, 8080, proto=17)))[0] == 200
    assert create(client, 4, portmap(entry(80, 9090, host_ip="127.0.0.1")))[0] == 200
    assert create(client, 5, portmap(entry(80, 9090, host_ip="127.0.0.2")))[0] == 200
    assert create(client, 6, portmap(entry(80, 9090)))[0] == 500  # every address: taken


def test_a_replayed_create_endpoint_keeps_its_ports(store, client):
    assert create(client, 1, portmap(entry(80, 8080)))[0] == 200
    assert create(client, 1, portmap(entry(80, 8080)))[0] == 200
    assert bindings(store, 1)[0]["hostPort"] == 8080


def test_a_port_a_process_listens_on_is_refused(store, client):
    with socket.socket() as listener:
        # As docker-proxy's: a trial bind() would pass it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        status, answer = create(client, 1, portmap(entry(80, port)))
        assert status == 500
        assert f"port {port}/tcp" in answer["Err"] and "a process" in answer["Err"]
        assert bindings(store, 1) is None
        # On another address it is free.
        assert create(client, 2, portmap(entry(80, port, host_ip="127.0.0.2")))[0] == 200


def test_no_host_port_gets_a_free_ephemeral_one(store, client, monkeypatch):
    monkeypatch.setattr(published, "_ephemeral", lambda: range(40000, 40003))
    assert create(client, 1, portmap(entry(80, 0), entry(81, 0)))[0] == 200
    assert [b["hostPort"] for b in bindings(store, 1)] == [40000, 40001]
    assert create(client, 2, portmap(entry(80, 0)))[0] == 200
    assert bindings(store, 2)[0]["hostPort"] == 40002
    status, answer = create(client, 3, portmap(entry(80, 0)))
    assert status == 500 and "every host port of it is taken" in answer["Err"]


def test_a_range_gets_its_first_free_port(store, client):
    assert create(client, 1, portmap(entry(80, 8080)))[0] == 200
    assert create(client, 2, portmap(entry(80, 8080, 8082)))[0] == 200
    assert bindings(store, 2)[0]["hostPort"] == 8081


def test_a_udp_port_a_process_holds_is_refused(store, client):
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as bound:
        bound.bind(("::", 0))
        port = bound.getsockname()[1]
        status, answer = create(client, 1, portmap(entry(53, port, proto=17)))
        assert status == 500 and f"port {port}/udp" in answer["Err"]
        assert create(client, 2, portmap(entry(53, port)))[0] == 200  # TCP: free
