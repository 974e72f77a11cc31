"""What `calico-libnetwork run` makes sure of before serving, as calico/node
does at its start: etcd answers, ClusterInformation says the datastore is
ready, default IP pools exist unless NO_DEFAULT_POOLS is set, this host's
Node is registered, the host forwards workload traffic and drops packets
with forged source addresses from it, and the host ends of its endpoints
answer for the containers' gateway and are hardened as Join now does.

When etcd does not answer at start, only the kernel's part comes before
serving; the worker does the etcd steps once etcd answers
(complete_when_etcd_answers) and the agent registers the Node."""

import ipaddress
import logging
import time

from agent import antispoofing, node
from agent.autodetect import node_address, node_address6
from datastore.errors import DatastoreUnavailable, EtcdTlsError, TooManyConflicts
from datastore.resources import Resources
from datastore.retry import Backoff
from datastore.settings import connect
from driver import dataplane, forwarding, reaper
from driver import endpoints as ep
from ipam import pools
from ipam.errors import IpamError
from kernel.errors import KernelError
from plugin.config import Config

LOG = logging.getLogger(__name__)


class StartupError(Exception):
    pass


def prepare_datastore(config: Config) -> None:
    etcd = connect(config.etcd)
    try:
        resources = Resources(etcd)
        # Here, not only in the agent: with --no-agent nothing else sets it.
        node.ensure_cluster_information(resources)
        if not config.default_pools.disabled:
            ensure_default_pools(resources, config)
    finally:
        etcd.close()


def prepare_kernel(config: Config) -> None:
    """What the host needs before any container joins; no etcd."""
    try:
        forwarding.ensure_forwarding()
    except forwarding.ForwardingError as exc:
        raise StartupError(f"cannot let containers' traffic through FORWARD: {exc}") from exc
    try:
        antispoofing.ensure()
    except KernelError as exc:
        # Serving without it would let any container forge its way past policy.
        raise StartupError(f"cannot check containers' source addresses: {exc}") from exc
    _check_arp_ignore(config.driver.proc_sys)


def prepare_with_datastore(config: Config) -> None:
    """The start's steps that read and write etcd: ClusterInformation, the
    default pools, and this node's endpoints' veths and host ends."""
    prepare_datastore(config)
    prepare_endpoints(config)


def complete_when_etcd_answers(config: Config) -> None:
    """prepare_with_datastore, retried until etcd answers: for a start that
    served without it (plugin/cli/main.py cmd_run)."""
    backoff = Backoff(first=1.0, longest=10.0)
    while True:
        try:
            prepare_with_datastore(config)
        except EtcdTlsError as exc:
            LOG.error("start-up cannot complete: %s", exc)  # a setting: no retry mends it
            return
        except DatastoreUnavailable as exc:
            LOG.warning("start-up waits for etcd: %s", exc)
            time.sleep(backoff.next())
            continue
        LOG.info("etcd answers: start-up complete")
        return


def prepare_endpoints(config: Config) -> None:
    etcd = connect(config.etcd)
    try:
        resources = Resources(etcd)
        reaper.sweep(resources, config.nodename)
        update_host_ends(resources, config)
    finally:
        etcd.close()


def update_host_ends(resources: Resources, config: Config) -> None:
    """Bring the host end of every endpoint of this node to what Join now
    does, without restarting their containers: endpoints joined by an older
    version get the hardening sysctls (strict rp_filter, no router
    advertisements) and, for IPv4, 169.254.1.1, so that they also work on a
    host without a default route."""
    proc_sys = config.driver.proc_sys
    for wep in ep.node_weps(resources, config.nodename):
        spec = wep.spec
        ifname = spec.get("interfaceName", "")
        try:
            dataplane.harden(ifname, proc_sys)
            if _has_ipv4(spec):
                dataplane.add_ipv4_gateway(ifname, proc_sys)
        except KernelError as exc:
            LOG.warning("endpoint %s: %s", wep.name, exc)


def _has_ipv4(spec) -> bool:
    try:
        return any(ipaddress.ip_network(n, strict=False).version == 4
                   for n in spec.get("ipNetworks", []))
    except (TypeError, ValueError):
        return False


def _check_arp_ignore(proc_sys: str) -> None:
    try:
        answers = dataplane.arp_answers_local_gateway(proc_sys)
    except KernelError as exc:
        LOG.warning("%s", exc)
        return
    if not answers:
        LOG.warning("net.ipv4.conf.all.arp_ignore is 2 or more: the host answers its "
                    "containers' ARP for 169.254.1.1 by proxy ARP only, which needs a "
                    "route to it (a default route); without one, containers reach nothing "
                    "until arp_ignore is 0 or 1")


def register_node(config: Config) -> None:
    """Write this host's Node; a name or address another live node uses
    stops the start (agent.errors.NodeConflict says how to fix it)."""
    settings = config.agent
    etcd = connect(config.etcd)
    try:
        node.register(Resources(etcd), settings.nodename, node_address(settings),
                      settings.heartbeat_interval, node_address6(settings))
    finally:
        etcd.close()


def ensure_default_pools(resources: Resources, config: Config) -> None:
    """Create default-ipv4-ippool (and -ipv6- when a CIDR is given) when no
    pool of that IP version exists yet, like calico/node."""
    d = config.default_pools
    wanted = [(4, "default-ipv4-ippool", d.ipv4_cidr, d.ipv4_block_size)]
    if d.ipv6_cidr:
        wanted.append((6, "default-ipv6-ippool", d.ipv6_cidr, d.ipv6_block_size))
    existing = pools.list_pools(resources)
    for ip_version, name, cidr, block_size in wanted:
        if any(p.version == ip_version for p in existing):
            continue
        try:
            pool = pools.build_pool(
                name, cidr, block_size=block_size,
                nat_outgoing=d.nat_outgoing if ip_version == 4 else d.ipv6_nat_outgoing,
                ipip_mode=d.ipip_mode if ip_version == 4 else "Never",
                vxlan_mode=d.vxlan_mode if ip_version == 4 else d.ipv6_vxlan_mode,
                node_selector=d.node_selector)
            pools.create_pool(resources, pool)
            LOG.info("created IP pool %s %s", name, cidr)
        except (IpamError, TooManyConflicts) as exc:
            if any(p.version == ip_version for p in pools.list_pools(resources)):
                continue  # another host created one at the same moment
            raise StartupError(f"cannot create the default IPv{ip_version} pool: {exc}") from exc
