"""Replays, through the HTTP face and against a real etcd, requests as each
Docker version sends them.  Every body is built from moby's wire structs and
the code that fills them, at the tag named beside it (LN is libnetwork's
directory at that tag: libnetwork up to v28.5.2, daemon/libnetwork in 29)."""

import pytest

from tests.plugin.support import all_keys, call, make_client

NO_GATEWAY_ADDRESS = {"SkipIPv4": True, "SkipIPv6": True}
# v28.0.0+ daemon/network.go createNetwork: NetworkOptionEnableIPv4 too.
OPTIONS_28 = {"com.docker.network.enable_ipv4": True, "com.docker.network.enable_ipv6": False,
              "com.docker.network.generic": {}}
OPTIONS_IPV6_ONLY = {"com.docker.network.enable_ipv4": False,
                     "com.docker.network.enable_ipv6": True,
                     "com.docker.network.generic": {}}
IPV6_ONLY_ERR = (
    "Calico networks need IPv4: this plugin routes only IPv4 between hosts, so the "
    "containers of an IPv6-only network (--ipv4=false) could not reach each other across "
    "hosts. Create the network without --ipv4=false (add --ipv6 for IPv4 and IPv6).")


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
