"""Builds the domain objects the HTTP layer calls, from one Config."""

import datetime
import threading

from datastore.resources import Resources
from datastore.settings import connect
from driver import endpoint_sweep
from driver.docker_api import DockerApi
from driver.network_driver import NetworkDriver
from driver.settings import DriverSettings
from ipam.allocator import Ipam
from ipam.driver import IpamDriver
from ipam.pool_cache import PoolCache
from plugin.config import Config


def build(config: Config) -> dict:
    etcd = connect(config.etcd)
    resources = Resources(etcd)
    docker = DockerApi(config.driver.docker_host)
    started = datetime.datetime.now(datetime.timezone.utc)
    built = wire(config.driver, resources, docker, PoolCache(etcd).start())
    threading.Thread(target=endpoint_sweep.after_start,
                     args=(built[NetworkDriver], started), daemon=True,
                     name="after-start").start()
    return built


def wire(settings: DriverSettings, resources: Resources, docker,
         pool_cache: PoolCache | None) -> dict:
    network = NetworkDriver(settings, resources, docker)
    ipam = Ipam(resources.etcd, settings.nodename, resources, pool_cache)
    return {
        NetworkDriver: network,
        IpamDriver: IpamDriver(ipam, settings.nodename, resources,
                               before_release=network.drop_stale_endpoint),
    }
