"""The plugin's HTTP face as dockerd sees it, for tests: a Flask test client
over the real domain objects and a real etcd, and dockerd stand-ins."""

import json

from datastore.resources import Resources
from driver.errors import DockerUnavailable
from driver.settings import DriverSettings
from plugin import services
from plugin.app import create_app

NODE = "test-node"
NET = "a" * 64
EP = "b1c2d3e4f5a6" + "0" * 52
# CreateNetwork as dockerd sends it for `--driver calico --ipam-driver calico-ipam`.
CREATE_NETWORK = {
    "NetworkID": NET, "Options": {},
    "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "0.0.0.0/0",
                  "Gateway": "0.0.0.0/0"}],
    "IPv6Data": []}


def endpoint(n: int) -> str:
    """The n-th test endpoint's id (64 hex digits)."""
    return f"{n:012x}" + "e" * 52


class NoDocker:
    """dockerd is not part of these tests: names stay unknown."""

    def network_name(self, network_id):
        raise DockerUnavailable("cannot reach dockerd at unix:///nowhere (not in these tests)")

    def endpoint_container(self, network_id, endpoint_id):
        return None


class NamedDocker(NoDocker):
    def network_name(self, network_id):
        return "Web_Net"


def make_client(store, docker=None, pool_cache=None, **settings):
    settings = DriverSettings(nodename=NODE, **settings)
    return create_app(lambda: services.wire(settings, Resources(store), docker or NoDocker(),
                                            pool_cache)).test_client()


def call(client, path, body=None, raw=None):
    """POST /path as dockerd does (no Content-Type; an empty body for no args)."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body))
    resp = client.post("/" + path, data=data)
    return resp.status_code, json.loads(resp.data)


def all_keys(store):
    kvs, _ = store.get_prefix("/calico/")
    return {kv.key for kv in kvs}
