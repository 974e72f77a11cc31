"""Docker's IpamDriver protocol over Calico IPAM, without HTTP: each method
takes the request fields (already type-checked by the HTTP layer) and
returns the response dict with Docker's field names, or raises an IpamError
whose message goes back to the user.  Behaviour follows Calico's
libnetwork-plugin (master), with PoolID = the Calico pool's name.
"""

import datetime
import secrets
from collections.abc import Callable

from netaddr import AddrFormatError, IPAddress, IPNetwork

from datastore.resources import Resources
from ipam.allocator import Ipam, parse_ip
from ipam.errors import AddressNotInPool, InvalidRequest, PoolNotFound
from ipam.pools import Pool, describe, find_pool_by_cidr, get_pool, list_pools

LOCAL_ADDRESS_SPACE = "CalicoLocalAddressSpace"
GLOBAL_ADDRESS_SPACE = "CalicoGlobalAddressSpace"
# PoolIDs of networks created without --subnet: any enabled pool of a version.
ANY_POOL_ID = {4: "CalicoPoolIPv4", 6: "CalicoPoolIPv6"}
ANY_CIDR = {4: "0.0.0.0/0", 6: "::/0"}
GATEWAY_OPTION = "com.docker.network.gateway"
ENDPOINT_NAME_OPTION = "com.docker.network.endpoint.name"  # Docker >= 29
# The handle ids and attrs["type"] of the addresses this driver allocates
# (`ipam gc` releases only those).
HANDLE_ID_PREFIX = "libnetwork."
ALLOCATION_TYPE = "libnetwork"

SUB_POOL_REFUSED = (
    "Calico IPAM does not support sub pool configuration on 'docker create network'. "
    "Calico IP Pools should be configured first and IP assignment is from those "
    "pre-configured pools.")
OPTIONS_REFUSED = "Arbitrary options are not supported"
GATEWAY_REFUSED = "Calico IPAM does not support specifying a gateway."
SUBNET_UNMATCHED = "The requested subnet must match the CIDR of a configured Calico IP Pool."
POOL_DELETED = ("The network references a Calico pool which has been deleted. "
                "Please re-instate the Calico pool before using the network.")


class IpamDriver:
    def __init__(self, ipam: Ipam, node: str, resources: Resources,
                 before_release: Callable[[IPAddress], None] | None = None):
        self.ipam = ipam
        self.node = node
        self.resources = resources
        # Called with each address ReleaseAddress is about to free: dockerd
        # deletes an address's endpoint before it releases the address, so an
        # endpoint still holding it lost its DeleteEndpoint (to a crash).
        self.before_release = before_release

    def get_capabilities(self) -> dict:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def get_default_address_spaces(self) -> dict:
        return {"LocalDefaultAddressSpace": LOCAL_ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": GLOBAL_ADDRESS_SPACE}

    def request_pool(self, address_space: str, pool: str, sub_pool: str,
                     options: dict | None, v6: bool) -> dict:
        if sub_pool:
            raise InvalidRequest(SUB_POOL_REFUSED)
        if options:
            raise InvalidRequest(OPTIONS_REFUSED)
        version = 6 if v6 else 4
        data = {GATEWAY_OPTION: ANY_CIDR[version]}  # dummy: Docker asks no gateway
        if not pool:
            return {"PoolID": ANY_POOL_ID[version], "Pool": ANY_CIDR[version], "Data": data}
        try:
            subnet = IPNetwork(pool)
        except (AddrFormatError, ValueError):
            raise InvalidRequest(f"Invalid CIDR {pool!r}: expected e.g. 192.168.0.0/16") from None
        if subnet.version != version:
            raise InvalidRequest(f"--subnet {pool} is not an IPv{version} subnet")
        found = find_pool_by_cidr(self.resources, subnet)
        if found is None:
            pools = list_pools(self.resources, version)
            raise PoolNotFound(
                f"{SUBNET_UNMATCHED} No pool has CIDR {subnet.cidr}; IPv{version} pools: "
                f"{describe(pools)}. Use one of those CIDRs or create a pool first, e.g. "
                f"`calico-libnetwork pool create {subnet.cidr}`")
        if found.disabled:
            raise PoolNotFound(f"Calico IP pool {found} is disabled; enable it before "
                               "creating a network on it")
        return {"PoolID": found.name, "Pool": str(found.cidr), "Data": data}

    def release_pool(self, pool_id: str) -> dict:
        return {}  # pools are Calico's and outlive Docker networks

    def request_address(self, pool_id: str, address: str, options: dict | None) -> dict:
        options = options or {}
        if options.get("RequestAddressType") == GATEWAY_OPTION:
            raise InvalidRequest(GATEWAY_REFUSED)
        version, pool = self._network_pool(pool_id)
        handle_id = HANDLE_ID_PREFIX + secrets.token_hex(16)
        attrs = {"node": self.node, "type": ALLOCATION_TYPE, "network-pool": pool_id,
                 "timestamp": _now()}
        if options.get(ENDPOINT_NAME_OPTION):
            attrs["endpoint-name"] = options[ENDPOINT_NAME_OPTION]
        if not address:
            ip = self.ipam.auto_assign(version, handle_id, attrs,
                                       [pool.name] if pool else None)
        else:
            ip = parse_ip(address)
            if ip.version != version:
                raise InvalidRequest(f"{ip} is not an IPv{version} address")
            if pool is not None and ip not in pool.cidr:
                raise AddressNotInPool(f"{ip} is not in Calico IP pool {pool}, which this "
                                       "network uses; pick an address inside it")
            self.ipam.assign_ip(ip, handle_id, attrs)
        return {"Address": f"{ip}/{32 if version == 4 else 128}", "Data": {}}

    def release_address(self, pool_id: str, address: str) -> dict:
        if not address:
            raise InvalidRequest("ReleaseAddress needs an Address")
        ip = parse_ip(address.split("/")[0])
        if self.before_release is not None:
            self.before_release(ip)
        # Releasing an address that is already free succeeds: Docker may retry.
        self.ipam.release_ips([ip])
        return {}

    def _network_pool(self, pool_id: str) -> tuple[int, Pool | None]:
        """IP version and pool of a network's PoolID (None: any enabled pool)."""
        for version, any_id in ANY_POOL_ID.items():
            if pool_id == any_id:
                return version, None
        if not pool_id:
            raise InvalidRequest("RequestAddress needs a PoolID")
        pool = next((p for p in self.ipam.pools() if p.name == pool_id), None)
        if pool is None:
            try:
                pool = get_pool(self.resources, pool_id)  # the pool cache may lag behind
            except PoolNotFound:
                raise PoolNotFound(f"{POOL_DELETED} (pool {pool_id!r})") from None
        return pool.version, pool


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
