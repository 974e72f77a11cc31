"""Builds the domain objects the HTTP layer calls, from one Config."""

from agent.settings import AgentSettings
from datastore.etcd import Etcd
from datastore.resources import Resources
from driver.docker_api import DockerApi
from driver.network_driver import NetworkDriver
from driver.settings import DriverSettings
from ipam.allocator import Ipam
from ipam.driver import IpamDriver
from plugin.config import Config


def connect(config: Config) -> Etcd:
    return Etcd(list(config.etcd_endpoints), ca_cert=config.etcd_ca_cert_file,
                cert=config.etcd_cert_file, key=config.etcd_key_file,
                timeout=config.etcd_timeout)


def agent_settings(config: Config) -> AgentSettings:
    return AgentSettings(
        nodename=config.nodename, etcd_endpoints=config.etcd_endpoints,
        etcd_ca_cert_file=config.etcd_ca_cert_file, etcd_cert_file=config.etcd_cert_file,
        etcd_key_file=config.etcd_key_file, etcd_timeout=config.etcd_timeout,
        ip=config.ip, ip_autodetection_method=config.ip_autodetection_method)


def build(config: Config) -> dict:
    etcd = connect(config)
    resources = Resources(etcd)
    settings = DriverSettings(
        nodename=config.nodename, ifprefix=config.ifprefix,
        create_profiles=config.create_profiles, label_endpoints=config.label_endpoints,
        label_poll_timeout=config.label_poll_timeout, veth_mtu=config.veth_mtu,
        proc_sys=config.proc_sys)
    return {
        "network": NetworkDriver(settings, resources, DockerApi(config.docker_host)),
        "ipam": IpamDriver(Ipam(etcd, config.nodename), config.nodename, resources),
    }
