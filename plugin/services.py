"""Builds the domain objects the HTTP layer calls, from one Config."""

import datastore.settings
from datastore.etcd import Etcd
from datastore.resources import Resources
from driver.docker_api import DockerApi
from driver.network_driver import NetworkDriver
from ipam.allocator import Ipam
from ipam.driver import IpamDriver
from plugin.config import Config


def connect(config: Config) -> Etcd:
    """A client for the plugin's etcd (the commands' shorthand)."""
    return datastore.settings.connect(config.etcd)


def build(config: Config) -> dict:
    etcd = connect(config)
    resources = Resources(etcd)
    docker = DockerApi(config.driver.docker_host)
    return {
        NetworkDriver: NetworkDriver(config.driver, resources, docker),
        IpamDriver: IpamDriver(Ipam(etcd, config.nodename), config.nodename, resources),
    }
