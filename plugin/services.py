"""Builds the domain objects the HTTP layer calls, from one Config."""

from datastore.resources import Resources
from datastore.settings import connect
from driver.docker_api import DockerApi
from driver.network_driver import NetworkDriver
from ipam.allocator import Ipam
from ipam.driver import IpamDriver
from ipam.pool_cache import PoolCache
from plugin.config import Config


def build(config: Config) -> dict:
    etcd = connect(config.etcd)
    resources = Resources(etcd)
    docker = DockerApi(config.driver.docker_host)
    ipam = Ipam(etcd, config.nodename, resources, PoolCache(etcd).start())
    return {
        NetworkDriver: NetworkDriver(config.driver, resources, docker),
        IpamDriver: IpamDriver(ipam, config.nodename, resources),
    }
