"""Replays, through the HTTP face and against a real etcd, the requests each
Docker version sends for the docs scenario:

    docker network create --driver calico --ipam-driver calico-ipam net1
    docker run --net net1 --name web -p 8080:80 ... busybox
    docker rm -f web
    docker network rm net1

Every body is built from moby's wire structs and the code that fills them, at
the tag named beside it.  LN is libnetwork's directory at that tag:
vendor/github.com/docker/libnetwork (v20.10.24), libnetwork (v25.0.0 to
v28.5.2), daemon/libnetwork (docker-v29.7.2).  The wire structs are
LN/drivers/remote/api/api.go and LN/ipams/remote/api/api.go (Go field names,
no json tags); calls without arguments send an empty body
(pkg/plugins/client.go).  Options maps are Go maps of interface values:
net.HardwareAddr marshals as base64, net.IP as a string ("" when unset).

The netlink half of Join is replaced by a recorder (tests/dataplane covers
it); everything else is the plugin's own code, with its real DockerApi asking
a fake dockerd of the same version for the network's name.
"""

import json
from dataclasses import dataclass, field

import pytest
from netaddr import IPAddress, IPNetwork

from driver import endpoints as ep
from driver.docker_api import DockerApi
from tests import fake_dockerd
from tests.fake_dockerd import FakeDockerd
from tests.plugin.support import NODE, NamedDocker, all_keys, call, make_client

ADDRESS = "<the address RequestAddress answered, ip/32>"
IP = "<that address without its prefix>"
CALICO_IPAM = ["NetworkDriver", "IpamDriver"]
WEP_PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"
# What a whole cycle leaves in etcd besides the pool: this host's IPAM block
# and its affinity (Calico keeps them for the next container).
KEPT_PREFIXES = ("/calico/ipam/v2/assignment/", "/calico/ipam/v2/host/")


@dataclass
class Step:
    call: str
    body: dict | None  # None: the empty body of a call without arguments
    answer: dict | None = None  # None: any 200 answer (checked below it)
    note: str = ""


@dataclass
class Replay:
    docker: str
    dockerd: tuple  # (ApiVersion, MinAPIVersion) of the fake dockerd
    network_id: str
    endpoint_id: str
    steps: list = field(default_factory=list)
    mac: str = ep.DEFAULT_MAC  # what the WorkloadEndpoint records
    container: str | None = None  # the container name RequestAddress carries


# -- the plugin's answers, the same for every version -----------------------

CAPABILITIES = {"Scope": "local", "ConnectivityScope": "global", "GwAllocChecker": True}
IPAM_CAPABILITIES = {"RequiresMACAddress": False, "RequiresRequestReplay": False}
ADDRESS_SPACES = {"LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
                  "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace"}
ANY_POOL = {"PoolID": "CalicoPoolIPv4", "Pool": "0.0.0.0/0",
            "Data": {"com.docker.network.gateway": "0.0.0.0/0"}}
NO_GATEWAY_ADDRESS = {"SkipIPv4": True, "SkipIPv6": True}
CALICO_MAC = {"Interface": {"MacAddress": ep.DEFAULT_MAC}}


def join_answer(endpoint_id):
    return {"InterfaceName": {"SrcName": ep.temp_ifname(endpoint_id), "DstPrefix": "cali"},
            "Gateway": "169.254.1.1",
            "StaticRoutes": [{"Destination": "169.254.1.1/32", "RouteType": 1}],
            "DisableGatewayService": False}


# -- bodies common to several versions --------------------------------------

# LN/ipams/remote/remote.go RequestPool; LN/network.go ipamAllocateVersion
# (no --subnet: Pool "", local scope: the local default space).  Options is
# the network's IPAM options as the client sent them: the docker CLI sends its
# --ipam-opt map, {} when empty.  Same struct and values v20.10.24 .. 29.7.2.
REQUEST_POOL_V4 = {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "", "SubPool": "",
                   "Options": {}, "V6": False}

# LN/driverapi/ipamdata.go MarshalJSON: Pool and Gateway (RequestPool's
# Data["com.docker.network.gateway"]) as ip/len; AuxAddresses omitted when nil.
IPV4_DATA = [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "0.0.0.0/0",
              "Gateway": "0.0.0.0/0"}]

# daemon/network.go buildCreateEndpointOptions (v20.10.24) and
# buildPortsRelatedCreateEndpointOptions (v25.0.0+) for -p 8080:80, through
# LN/endpoint.go CreateOptionPortMapping / CreateOptionExposedPorts
# (types.PortBinding, types.TransportPort; Proto 6 = tcp).  The sandbox
# carries the same two keys (LN/sandbox_options.go), sent as Join's Options.
PORTS = {
    "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
    "com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "",
                                    "HostPort": 8080, "HostPortEnd": 8080}],
}


def endpoint_ids(replay):
    return {"NetworkID": replay.network_id, "EndpointID": replay.endpoint_id}


def network_create(replay, *, gw_alloc_check, registration_spaces, pool_spaces, options):
    """`docker network create`: LN/controller.go NewNetwork, LN/network.go
    ipamAllocate (the remote proxies LN/drivers/remote/driver.go and
    LN/ipams/remote/remote.go)."""
    steps = [
        # pkg/plugins/plugins.go: a legacy plugin is activated on first use,
        # then each interface's handler runs in the order of Implements.
        Step("Plugin.Activate", None, {"Implements": CALICO_IPAM}),
        Step("NetworkDriver.GetCapabilities", None, CAPABILITIES),
        Step("IpamDriver.GetCapabilities", None, IPAM_CAPABILITIES),
    ]
    if registration_spaces:  # up to v23: LN/drvregistry/drvregistry.go registerIpamDriver
        steps.append(Step("IpamDriver.GetDefaultAddressSpaces", None, ADDRESS_SPACES))
    if gw_alloc_check:  # v28.0.0+: LN/controller.go NewNetwork, before any IPAM call
        steps.append(Step("NetworkDriver.GwAllocCheck", {"Options": options},
                          NO_GATEWAY_ADDRESS))
    steps += [Step("IpamDriver.GetDefaultAddressSpaces", None, ADDRESS_SPACES)] * pool_spaces
    steps += [
        Step("IpamDriver.RequestPool", REQUEST_POOL_V4, ANY_POOL),
        # No gateway RequestAddress: RequestPool's Data named one.
        Step("NetworkDriver.CreateNetwork",
             {"NetworkID": replay.network_id, "Options": options, "IPv4Data": IPV4_DATA,
              "IPv6Data": []},  # LN/network.go getIPData: an empty list, never null
             {}),
    ]
    return steps


def container_run(replay, *, address_options, endpoint_options, interface_mac="",
                  answer=None, external_options=None):
    """`docker run`: daemon/container_operations.go connectToNetwork ->
    LN/network.go createEndpoint (RequestAddress, CreateEndpoint) ->
    LN/endpoint.go sbJoin (Join, ProgramExternalConnectivity, EndpointOperInfo)."""
    return [
        Step("IpamDriver.RequestAddress",
             {"PoolID": "CalicoPoolIPv4", "Address": "", "Options": address_options}),
        Step("NetworkDriver.CreateEndpoint",
             {**endpoint_ids(replay),
              "Interface": {"Address": ADDRESS, "AddressIPv6": "", "MacAddress": interface_mac},
              "Options": endpoint_options},
             CALICO_MAC if answer is None else answer),
        # The sandbox key: /var/run/docker/netns/<container id[:12]>.
        Step("NetworkDriver.Join",
             {**endpoint_ids(replay), "SandboxKey": "/var/run/docker/netns/5e1f0c2a9b3d",
              "Options": PORTS},
             join_answer(replay.endpoint_id)),
        Step("NetworkDriver.ProgramExternalConnectivity",
             {**endpoint_ids(replay),
              "Options": PORTS if external_options is None else external_options}, {}),
        Step("NetworkDriver.EndpointOperInfo", endpoint_ids(replay), {"Value": {}}),
    ]


def container_stop(replay):
    """`docker rm -f`: LN/sandbox.go delete -> LN/endpoint.go sbLeave, Delete."""
    return [
        Step("NetworkDriver.RevokeExternalConnectivity", endpoint_ids(replay), {}),
        Step("NetworkDriver.Leave", endpoint_ids(replay), {}),
        Step("NetworkDriver.DeleteEndpoint", endpoint_ids(replay), {}),
        # LN/ipams/remote/remote.go ReleaseAddress: the address without prefix.
        Step("IpamDriver.ReleaseAddress", {"PoolID": "CalicoPoolIPv4", "Address": IP}, {}),
    ]


def network_rm(replay, *, delete_first):
    """`docker network rm`: LN/network.go delete; ipamReleaseVersion releases
    the gateway RequestPool's Data named (0.0.0.0) too."""
    release = [
        Step("IpamDriver.ReleaseAddress", {"PoolID": "CalicoPoolIPv4", "Address": "0.0.0.0"}, {}),
        Step("IpamDriver.ReleasePool", {"PoolID": "CalicoPoolIPv4"}, {}),
    ]
    delete = [Step("NetworkDriver.DeleteNetwork", {"NetworkID": replay.network_id}, {})]
    return delete + release if delete_first else release + delete


def docker_20_10():
    replay = Replay("20.10", fake_dockerd.DOCKER_20_10, "2010" * 16, "a010" * 16)
    replay.steps = [
        # v20.10.24 daemon/network.go createNetwork: NetworkOptionEnableIPv6,
        # NetworkOptionDriverOpts ({} without -o).
        *network_create(replay, gw_alloc_check=False, registration_spaces=True, pool_spaces=0,
                        options={"com.docker.network.enable_ipv6": False,
                                 "com.docker.network.generic": {}}),
        # v20.10.24 LN/network.go createEndpoint: ep.ipamOptions nil -> null.
        # daemon/network.go buildCreateEndpointOptions: with --dns 1.1.1.1,
        # CreateOptionDNS puts endpoint.dnsservers beside the ports.
        *container_run(replay, address_options=None,
                       endpoint_options={**PORTS,
                                         "com.docker.network.endpoint.dnsservers": ["1.1.1.1"]}),
        *container_stop(replay),
        # v20.10.24 LN/network.go delete: DeleteNetwork, then the IPAM release.
        *network_rm(replay, delete_first=True),
    ]
    return replay


def docker_26():
    replay = Replay("26", fake_dockerd.DOCKER_26, "2600" * 16, "a026" * 16,
                    mac="02:42:c0:a8:00:99")
    replay.steps = [
        # v26.1.5: GetDefaultAddressSpaces per network create (LN/network.go
        # ipamAllocate -> deriveAddressSpace), not at registration.
        *network_create(replay, gw_alloc_check=False, registration_spaces=False, pool_spaces=1,
                        options={"com.docker.network.enable_ipv6": False,
                                 "com.docker.network.generic": {}}),
        # v26.1.5 `docker run --mac-address 02:42:c0:a8:00:99` (per endpoint
        # since 25: EndpointSettings.DesiredMacAddress): daemon/network.go
        # buildCreateEndpointOptions puts the net.HardwareAddr (base64) under
        # endpoint.macaddress; LN/network.go createEndpoint sets the interface's
        # MAC, which LN/drivers/remote/driver.go sends as Interface.MacAddress.
        # The answer must not name a MAC ("driver modified interface MAC address").
        *container_run(replay, address_options=None,
                       endpoint_options={**PORTS,
                                         "com.docker.network.endpoint.macaddress": "AkLAqACZ"},
                       interface_mac="02:42:c0:a8:00:99", answer={}),
        *container_stop(replay),
        *network_rm(replay, delete_first=False),
    ]
    return replay


def docker_27():
    replay = Replay("27", fake_dockerd.DOCKER_27, "2700" * 16, "a027" * 16)
    replay.steps = [
        # v27.0.1 LN/ipams/remote/remote.go RequestPool asks
        # GetDefaultAddressSpaces again before each RequestPool.
        *network_create(replay, gw_alloc_check=False, registration_spaces=False, pool_spaces=2,
                        options={"com.docker.network.enable_ipv6": False,
                                 "com.docker.network.generic": {}}),
        # v27.0.1 `docker run --sysctl net.ipv4.conf.eth0.log_martians=1`:
        # api/server/router/container/container_routes.go handleSysctlBC moves
        # it to the endpoint's driver opt endpoint.sysctls (IFNAME for the
        # interface); LN/sandbox_linux.go applies it to the moved interface.
        *container_run(replay, address_options=None,
                       endpoint_options={**PORTS, "com.docker.network.endpoint.sysctls":
                                         "net.ipv4.conf.IFNAME.log_martians=1"}),
        *container_stop(replay),
        *network_rm(replay, delete_first=False),
    ]
    return replay


# v28.0.0+ daemon/network.go createNetwork: NetworkOptionEnableIPv4 too.
OPTIONS_28 = {"com.docker.network.enable_ipv4": True, "com.docker.network.enable_ipv6": False,
              "com.docker.network.generic": {}}
# `--network name=net1,driver-opt=com.docker.network.endpoint.ifname=app0,
# driver-opt=com.docker.network.endpoint.sysctls=net.ipv6.conf.IFNAME.disable_ipv6=1`
# (v28.0.0+: the ifname driver opt; LN/drivers/remote/driver.go Join passes ""
# as the destination name, so dockerd names the interface DstPrefix+N anyway).
DRIVER_OPTS_28 = {"com.docker.network.endpoint.ifname": "app0",
                  "com.docker.network.endpoint.sysctls": "net.ipv6.conf.IFNAME.disable_ipv6=1"}


def docker_28():
    replay = Replay("28", fake_dockerd.DOCKER_28, "2800" * 16, "a028" * 16)
    replay.steps = [
        # v28.5.2 LN/controller.go NewNetwork: GwAllocCheck with the network's
        # generic options (the map CreateNetwork gets) before any IPAM call.
        *network_create(replay, gw_alloc_check=True, registration_spaces=False, pool_spaces=2,
                        options=OPTIONS_28),
        # v28.5.2 LN/endpoint.go sbJoin: ProgramExternalConnectivity gets the
        # sandbox labels plus driver.private.no_proxy_6to4, always as a bool.
        *container_run(replay, address_options=None, endpoint_options={**PORTS, **DRIVER_OPTS_28},
                       external_options={
                           **PORTS, "com.docker.network.driver.private.no_proxy_6to4": False}),
        *container_stop(replay),
        *network_rm(replay, delete_first=False),
    ]
    return replay


def docker_29():
    replay = Replay("29", fake_dockerd.DOCKER_29_0, "2900" * 16, "a029" * 16, container="web")
    replay.steps = [
        # docker-v29.7.2 LN/controller.go NewNetwork: as 28.
        *network_create(replay, gw_alloc_check=True, registration_spaces=False, pool_spaces=2,
                        options=OPTIONS_28),
        # docker-v29.7.2 LN/network.go createEndpoint: ep.ipamOptions =
        # {netlabel.EndpointName: name} for every endpoint (commit c6717f4387).
        # LN/drivers/remote/driver.go ProgramExternalConnectivity sends the
        # options Join had (no_proxy_6to4 only when another endpoint is the
        # IPv6 gateway).
        *container_run(replay, address_options={"com.docker.network.endpoint.name": "web"},
                       endpoint_options={**PORTS, **DRIVER_OPTS_28}),
        *container_stop(replay),
        *network_rm(replay, delete_first=False),
    ]
    return replay


REPLAYS = [docker_20_10(), docker_26(), docker_27(), docker_28(), docker_29()]


@pytest.mark.parametrize("replay", REPLAYS, ids=[r.docker for r in REPLAYS])
def test_docker_version_replay(store, make_pool, no_netlink, replay):
    make_pool("default-ipv4-ippool", "192.168.0.0/16")
    with FakeDockerd(replay.dockerd) as dockerd:
        dockerd.networks[replay.network_id] = "net1"
        client = make_client(store, docker=DockerApi(dockerd.url))
        address = None
        for step in replay.steps:
            body = _fill(step.body, address)
            status, answer = call(client, step.call, body)
            assert status == 200, f"{step.call}: {answer}"
            if step.call == "IpamDriver.RequestAddress":
                address = answer["Address"]
                assert address.startswith("192.168.") and address.endswith("/32")
                # Docker 29 names the container (ipam gc shows it); older ones do not.
                assert _allocation_attributes(store, address).get("endpoint-name") == \
                    replay.container
                continue
            assert answer == step.answer, step.call
            if step.call == "NetworkDriver.CreateEndpoint":
                wep = _workload_endpoint(store, replay.endpoint_id)
                assert wep["spec"]["profiles"] == ["net1"]
                assert wep["spec"]["mac"] == replay.mac
                assert wep["spec"]["ipNetworks"] == [address]
        assert no_netlink == [(ep.host_ifname(replay.endpoint_id),
                               ep.temp_ifname(replay.endpoint_id), replay.mac)]
        # The name was asked at the version this dockerd offered (29.0 refuses 1.41).
        assert {path.split("/")[1] for _, path in dockerd.requests if path != "/version"} == {
            "v" + replay.dockerd[0]}
    assert {k for k in all_keys(store) if not k.startswith(KEPT_PREFIXES)} == {
        "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"}


# -- one-call replays: what a version sends in other situations -------------

OPTIONS_IPV6_ONLY = {"com.docker.network.enable_ipv4": False,
                     "com.docker.network.enable_ipv6": True,
                     "com.docker.network.generic": {}}
IPV6_ONLY_ERR = (
    "Calico networks need IPv4: each host reaches its containers through an IPv4 "
    "gateway (169.254.1.1) and the hosts know each other by IPv4 address, so IPv6-only "
    "networks (--ipv4=false) are not supported. Create the network without --ipv4=false "
    "(add --ipv6 for IPv4 and IPv6).")


@pytest.mark.parametrize("path, body", [
    # v28.5.2 `docker network create --ipv4=false --ipv6 ...`: GwAllocCheck
    # first (LN/controller.go NewNetwork); refused before any IPAM call.
    ("NetworkDriver.GwAllocCheck", {"Options": OPTIONS_IPV6_ONLY}),
    # The CreateNetwork it would lead to (LN/network.go ipamAllocate skips
    # IPv4 when enable_ipv4 is false: IPv4Data is empty).
    ("NetworkDriver.CreateNetwork",
     {"NetworkID": "2801" * 16, "Options": OPTIONS_IPV6_ONLY, "IPv4Data": [],
      "IPv6Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "::/0",
                    "Gateway": "::/0"}]}),
], ids=["GwAllocCheck", "CreateNetwork"])
def test_ipv6_only_networks_are_refused_clearly(store, path, body):
    status, answer = call(make_client(store), path, body)
    assert (status, answer) == (500, {"Err": IPV6_ONLY_ERR})
    assert all_keys(store) == set()


@pytest.mark.parametrize("options, answer", [
    (OPTIONS_28, NO_GATEWAY_ADDRESS),
    ({**OPTIONS_28, "com.docker.network.enable_ipv6": True}, NO_GATEWAY_ADDRESS),
    ({**OPTIONS_28, "com.docker.network.internal": True},
     {"Err": "Calico driver does not support the flag --internal."}),
    ({**OPTIONS_28, "com.docker.network.generic": {"mtu": "1400"}},
     {"Err": "Calico driver does not support the flag mtu."}),
], ids=["plain", "ipv6", "internal", "driver-opt"])
def test_gw_alloc_check_answers_or_refuses_before_ipam(store, options, answer):
    # v28.5.2 LN/controller.go NewNetwork (GetSkipGwAlloc in
    # LN/drivers/remote/driver.go) for net1, with --ipv6, --internal, -o mtu=1400.
    status, body = call(make_client(store), "NetworkDriver.GwAllocCheck", {"Options": options})
    assert (status, body) == ((200 if "SkipIPv4" in answer else 500), answer)
    assert all_keys(store) == set()


def test_second_start_on_docker_25_0_0_keeps_the_mac(store):
    """v25.0.0 stored the MAC a driver returned as the endpoint's configured
    MAC (daemon/container_operations.go; fixed in 25.0.1/25.0.3), so the next
    start sends ours back as if the user had set it: it must not be echoed."""
    client = make_client(store, docker=NamedDocker())
    body = {"NetworkID": "2500" * 16, "EndpointID": "a025" * 16,
            "Interface": {"Address": "192.168.3.4/32", "AddressIPv6": "",
                          "MacAddress": ep.DEFAULT_MAC},
            "Options": {**PORTS, "com.docker.network.endpoint.macaddress": "7u7u7u7u"}}
    assert call(client, "NetworkDriver.CreateEndpoint", body) == (200, {})
    assert _workload_endpoint(store, "a025" * 16)["spec"]["mac"] == ep.DEFAULT_MAC


@pytest.mark.parametrize("options", [None, {}], ids=["null", "empty"])
def test_request_pool_options_null_or_empty(store, make_pool, options):
    # LN/ipams/remote/api/api.go RequestPoolRequest.Options: the network's
    # IPAM options, null when the API client omitted them.
    make_pool("default-ipv4-ippool", "192.168.0.0/16")
    status, body = call(make_client(store), "IpamDriver.RequestPool",
                        {**REQUEST_POOL_V4, "Options": options})
    assert (status, body) == (200, ANY_POOL)


def _fill(body, address):
    """The body with the address RequestAddress answered in place."""
    if body is None:
        return None
    text = json.dumps(body)
    if address is not None:
        text = text.replace(ADDRESS, address).replace(IP, address.split("/")[0])
    return json.loads(text)


def _allocation_attributes(store, address):
    """The attributes (`secondary`) Calico's block records for an address,
    read from the block's JSON as libcalico-go lays it out."""
    ip = IPAddress(address.split("/")[0])
    kvs, _ = store.get_prefix(KEPT_PREFIXES[0])
    for kv in kvs:
        block = json.loads(kv.value)
        if ip in IPNetwork(block["cidr"]):
            index = block["allocations"][int(ip) - IPNetwork(block["cidr"]).first]
            assert index is not None, f"{address} is not allocated in {block['cidr']}"
            return block["attributes"][index]["secondary"] or {}
    raise AssertionError(f"no block holds {address}")


def _workload_endpoint(store, endpoint_id):
    key = f"{WEP_PREFIX}libnetwork/{NODE.replace('-', '--')}-libnetwork-libnetwork-{endpoint_id}"
    return json.loads(store.get(key).value)
