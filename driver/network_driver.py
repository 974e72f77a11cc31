"""The NetworkDriver calls: Docker's network/endpoint lifecycle in Calico's terms.

Join path, top-down: CreateNetwork records the network; CreateEndpoint writes
the network's Profile and the WorkloadEndpoint; Join makes the cali veth pair
and the host side (route, proxy ARP) and tells Docker to move the temp end
into the container as cali0 with gateway 169.254.1.1; Leave and
DeleteEndpoint undo it.  Every step is safe to replay.
"""

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import NamedTuple

import netaddr

from datastore.bounded import BoundedDict
from datastore.errors import (DatastoreError, ResourceAlreadyExists, ResourceNotFound)
from datastore.resources import Resource, Resources
from datastore.retry import Backoff
from driver import dataplane
from driver import endpoints as ep
from driver import published
from driver.docker_api import DockerApi
from driver.holders import AddressHolders
from driver.errors import (DockerUnavailable, DriverError, NetworkNameUnknown, NotCalicoIpam,
                           UnknownEndpoint, UnsupportedOption)
from driver.networks import Network, Networks
from driver.reaper import LinkReaper
from driver.sandboxes import Sandboxes, SandboxTaken
from driver.settings import DriverSettings
from kernel.errors import KernelError

LOG = logging.getLogger(__name__)

IPV4_GATEWAY = dataplane.IPV4_GATEWAY  # on every host-side veth
IPV6_GATEWAY = dataplane.IPV6_GATEWAY  # on every host-side veth
CALICO_IPAM_GATEWAYS = {4: "0.0.0.0/0", 6: "::/0"}
CALICO_ADDRESS_SPACES = ("CalicoLocalAddressSpace", "CalicoGlobalAddressSpace")
OPT_PREFIX = "com.docker.network."
OPT_IPV6 = OPT_PREFIX + "enable_ipv6"
OPT_IPV4 = OPT_PREFIX + "enable_ipv4"
OPT_GENERIC = OPT_PREFIX + "generic"
OPT_IFNAME = OPT_PREFIX + "endpoint.ifname"  # Docker >= 28
# How long dockerd may take to show a new network (CreateNetwork's learning),
# and how long CreateEndpoint waits for that learning before asking itself.
NAME_LEARN_SECONDS = 30.0
NAME_WAIT_SECONDS = 2.0
# When to first ask dockerd for a container after its Join: dockerd 20.10, 26
# and 28 showed every one by then; a question before that costs dockerd a
# network inspect while it starts the container.
CONTAINER_SHOWN_SECONDS = 0.05
# A busy dockerd (restarting with Swarm tasks, a manager electing) may show
# a container only after label_poll_timeout: asking goes on, slower, while
# its endpoint exists, or its names never reach the other hosts.
LATE_LEARN_SECONDS = 300.0
LATE_ASK_DELAYS = (1.0, 10.0)
IPV6_ONLY_REFUSED = (
    "Calico networks need IPv4: each host reaches its containers through an IPv4 "
    "gateway (169.254.1.1) and the hosts know each other by IPv4 address, so IPv6-only "
    "networks (--ipv4=false) are not supported. Create the network without --ipv4=false "
    "(add --ipv6 for IPv4 and IPv6).")
SWARM_ID_LENGTH = 25  # swarmkit's network ids; dockerd's own have 64 hex digits
_CACHE_LIMIT = 4096
# Threads kept for the work Join starts beside its own: the sandbox claim
# (etcd) while Join makes the veth (netlink), and learning the container
# (dockerd, up to label_poll_timeout each).  Starting a thread instead costs
# Join about 0.5 ms, as the new thread must run before start() returns.
_CLAIM_THREADS = 16  # gunicorn's threads: no Join waits for a claim's thread
_LEARN_THREADS = 32  # more containers starting at once queue their learning


class NetworkDriver:
    def __init__(self, settings: DriverSettings, resources: Resources, docker: DockerApi):
        self.settings = settings
        self.resources = resources
        self.networks = Networks(resources.etcd)
        self.sandboxes = Sandboxes(resources.etcd, settings.nodename)
        self.docker = docker
        self.reaper = LinkReaper()
        self.holders = AddressHolders(resources, settings.nodename)
        # Per-process caches that spare etcd round trips on the endpoint calls,
        # shared by gunicorn's threads.  Each entry is only a hint: writes
        # still compare revisions.
        self._named_networks = BoundedDict(_CACHE_LIMIT)  # network id -> Network, named
        self._profiles = set()  # profiles this process created or saw exist
        self._weps = BoundedDict(_CACHE_LIMIT)  # endpoint id -> _Known, as last written
        self._learning = BoundedDict(_CACHE_LIMIT)  # network id -> Event set when learning ends
        self._claims = ThreadPoolExecutor(_CLAIM_THREADS, thread_name_prefix="claim-sandbox")
        self._learners = ThreadPoolExecutor(_LEARN_THREADS, thread_name_prefix="learn-ep")
        # Choosing host ports and writing them is one step for this host's
        # endpoints, which only this process creates: two containers asking
        # for one port at once cannot both see it free.
        self._publishing = threading.Lock()
        self._closed = threading.Event()  # ends the late learning

    def close(self) -> None:
        """Wait for the claims and learning Join started, then end the kept
        threads (the process is done with this driver)."""
        self._closed.set()
        self._claims.shutdown(wait=True)
        self._learners.shutdown(wait=True)

    # -- capabilities and no-ops ---------------------------------------

    def get_capabilities(self):
        # Scope local: dockerd refuses global-scope remote drivers without a
        # cluster store (removed in Docker 23).  Hosts share networks by name.
        # GwAllocChecker (Docker >= 28; older ones ignore it): see gw_alloc_check.
        return {"Scope": "local", "ConnectivityScope": "global", "GwAllocChecker": True}

    def gw_alloc_check(self, options):
        """Docker >= 28, before any IPAM call of `docker network create`, with
        CreateNetwork's Options: Calico containers use 169.254.1.1 and fe80::1
        as gateways, so dockerd must reserve no gateway address in the pool.
        What CreateNetwork would refuse is refused here, before IPAM is asked."""
        _check_options(options)
        return {"SkipIPv4": True, "SkipIPv6": True}

    def endpoint_oper_info(self, network_id, endpoint_id):
        return {"Value": {}}

    def discover_new(self, discovery_type, discovery_data):
        return {}

    def discover_delete(self, discovery_type, discovery_data):
        return {}

    def program_external_connectivity(self, network_id, endpoint_id, options):
        # Published ports are on the WorkloadEndpoint since CreateEndpoint
        # (see driver/published.py); this host's agent renders them.
        return {}

    def revoke_external_connectivity(self, network_id, endpoint_id):
        return {}

    def allocate_network(self, network_id, options, ipv4_data, ipv6_data):
        return {"Options": {}}  # swarm only; a local-scope driver never gets it

    def free_network(self, network_id):
        return {}

    # -- networks ------------------------------------------------------

    def create_network(self, network_id, options, ipv4_data, ipv6_data):
        _check_options(options)
        if not ipv4_data:
            raise UnsupportedOption(IPV6_ONLY_REFUSED)
        for data in ipv4_data:
            if data["Gateway"] != CALICO_IPAM_GATEWAYS[4]:
                raise NotCalicoIpam(_not_calico_ipam(network_id, ""))
        for data in ipv6_data:
            if (data["AddressSpace"] not in CALICO_ADDRESS_SPACES
                    or data["Gateway"] not in ("", CALICO_IPAM_GATEWAYS[6])):
                raise NotCalicoIpam(_not_calico_ipam(network_id, " for IPv6"))
        network = Network(
            id=network_id, node=self.settings.nodename,
            ipv6=bool(options.get(OPT_IPV6)) or bool(ipv6_data),
            ipv4_pools=[d["Pool"] for d in ipv4_data],
            ipv6_pools=[d["Pool"] for d in ipv6_data],
            options={k: v for k, v in options.items() if k != OPT_GENERIC})
        self.networks.add(network)
        # dockerd stores the network (and so knows its name) only after this
        # call returns: learn the name in the background.
        learned = threading.Event()
        self._learning.put(network_id, learned)
        threading.Thread(target=self._learn_name, args=(network_id, learned), daemon=True,
                         name=f"learn-name-{network_id[:12]}").start()
        return {}

    def _learn_name(self, network_id, learned):
        """Ask dockerd for the network's name until it shows the network, and
        record the name in etcd; `learned` is set when this ends."""
        try:
            name, failure = _ask_until_shown(lambda: self.docker.network_name(network_id),
                                             NAME_LEARN_SECONDS, max_delay=1.0)
            if name is None:
                LOG.warning("dockerd never showed network %s (%s); its endpoints are refused "
                            "until dockerd tells its name", network_id[:12], failure)
                return
            try:
                self.networks.set_name(network_id, name)
            except DatastoreError as exc:  # CreateEndpoint asks dockerd and records it then
                LOG.warning("could not record the name %r of network %s: %s", name,
                            network_id[:12], exc)
        finally:
            self._learning.pop(network_id)
            learned.set()

    def delete_network(self, network_id):
        network = self.networks.get(network_id)
        named = self._named_networks.pop(network_id, None)
        if network and network.name:
            self._profiles.discard(ep.profile_name(network.name))
        if len(network_id) == SWARM_ID_LENGTH:
            # Another node may have removed the shared record: the name this
            # process knew still names the Profile.
            self._leave_swarm_network(network_id, network or named)
            return {}
        self.networks.remove(network_id)
        if (network and network.name and self.settings.create_profiles
                and not self.networks.name_in_use_elsewhere(network.name, network_id)):
            self.resources.delete("Profile", ep.profile_name(network.name))
        return {}

    def _leave_swarm_network(self, network_id, network):
        """A swarm network has one id, record and Profile on every node, and a
        node's dockerd deletes it when the node's last task leaves: remove them
        only when no endpoint of any node is on the network.  A node creating
        an endpoint meanwhile asks for the Profile again once its endpoint is
        written (create_endpoint), and this checks for endpoints again once the
        Profile is gone: whichever comes last brings it back."""
        if ep.on_network(self.resources, network_id):
            return
        if network and network.name and self.settings.create_profiles:
            profile = ep.profile_name(network.name)
            self.resources.delete("Profile", profile)
            if ep.on_network(self.resources, network_id):
                self._ensure_profile(profile)
                return
        self.networks.remove(network_id)

    def _network(self, network_id, interface) -> Network:
        """The network's record, named when profiles are made; a NetworkID we
        never saw is recorded now (its CreateNetwork went to another etcd, or
        the record was lost).

        The name normally comes from etcd, where CreateNetwork's learning put
        it: dockerd restarting its --restart=always containers calls
        CreateEndpoint before it serves its API, and finds the name there.
        Raises NetworkNameUnknown, having written nothing, when the name is
        needed and neither etcd nor dockerd can tell it; TooManyConflicts,
        having written nothing, when recording the name dockerd told kept
        losing: a restarted dockerd's CreateEndpoint finds names in etcd only."""
        network = self._named_networks.get(network_id)
        if network is not None:
            return network
        network = self.networks.get(network_id)
        if network is None or network.name is None:
            name = self._network_name(network_id) if self.settings.create_profiles else None
            if network is None:
                LOG.warning("network %s was not created through this plugin's datastore; "
                            "recording it now", network_id[:12])
                network = Network(id=network_id, node=self.settings.nodename,
                                  ipv6=bool(interface["AddressIPv6"]), name=name)
                self.networks.add(network)
            elif name is not None:
                network = self.networks.set_name(network_id, name) or replace(network, name=name)
        if network.name is not None:
            self._named_networks.put(network_id, network)
        return network

    def _network_name(self, network_id) -> str:
        """The name CreateNetwork's learning records, waited for a short
        while; else dockerd's answer to one question, within its timeout."""
        learning = self._learning.get(network_id)
        if learning is not None and learning.wait(NAME_WAIT_SECONDS):
            network = self.networks.get(network_id)
            if network is not None and network.name is not None:
                return network.name
        try:
            return self.docker.network_name(network_id)
        except DockerUnavailable as exc:
            raise NetworkNameUnknown(
                f"cannot create an endpoint on network {network_id[:12]}: its name is "
                "unknown, and Calico names the network's profile, which isolates the network "
                f"on every host, after it. {exc}. Make DOCKER_HOST reach this host's dockerd "
                "(a managed plugin needs /var/run/docker.sock mounted), then start the "
                "container again") from exc

    # -- endpoints -----------------------------------------------------

    def create_endpoint(self, network_id, endpoint_id, interface, options):
        # Options need nothing from Calico: dockerd applies endpoint.sysctls
        # (Docker >= 27) to the interface itself once it moved it, and never
        # applies endpoint.ifname (Docker >= 28) for a remote driver; the MAC
        # is Interface.MacAddress (endpoint.macaddress is the same, base64).
        ip_networks = _endpoint_addresses(interface)
        asked = published.requests(options)  # refused before anything is written
        network = self._network(network_id, interface)
        if options.get(OPT_IFNAME):
            LOG.info("endpoint %s asks for interface name %r, which dockerd does not apply "
                     "for remote drivers; it names the interface %s<n>", endpoint_id[:12],
                     options[OPT_IFNAME], self.settings.ifprefix)
        profiles = []
        if self.settings.create_profiles:
            profile = ep.profile_name(network.name)
            self._ensure_profile(profile)
            profiles = [profile]
        mac = (interface["MacAddress"] or ep.DEFAULT_MAC).lower().replace("-", ":")
        bindings = []
        # Only an endpoint that publishes waits for the others' choice of ports.
        with self._publishing if asked else contextlib.nullcontext():
            if asked:
                bindings = published.assign(asked, self._published_by_others(endpoint_id))
            wep = ep.workload_endpoint(self.settings.nodename, endpoint_id, network_id,
                                       ip_networks, mac, profiles, network.name, bindings)
            try:
                wep = self.resources.create(wep)
            except ResourceAlreadyExists:  # a replayed CreateEndpoint
                wep = self.resources.apply(wep)
        self._weps.put(endpoint_id, _Known(wep))
        if bindings:
            LOG.info("endpoint %s publishes %s", endpoint_id[:12],
                     ", ".join(str(b) for b in bindings))
        if profiles and len(network_id) == SWARM_ID_LENGTH:
            # Another node's DeleteNetwork may have deleted the shared Profile
            # since it was ensured: ask etcd again (_leave_swarm_network's pair).
            self._profiles.discard(profiles[0])
            self._ensure_profile(profiles[0])
        self.holders.add(endpoint_id, ip_networks)
        # Give Docker the MAC only when it has none: returning a field Docker
        # already set is an error ("driver modified interface MAC address").
        if interface["MacAddress"]:
            return {}
        return {"Interface": {"MacAddress": ep.DEFAULT_MAC}}

    def _published_by_others(self, endpoint_id) -> list:
        """The host ports this node's other endpoints publish."""
        return [binding for wep in ep.node_weps(self.resources, self.settings.nodename)
                if wep.spec.get("endpoint") != endpoint_id
                for binding in ep.published_ports(wep)]

    def _ensure_profile(self, name):
        if name in self._profiles:
            return
        try:
            self.resources.create(ep.network_profile(name))
        except ResourceAlreadyExists:
            pass
        self._profiles.add(name)

    def _learn_endpoint(self, network_id, endpoint_id):
        """Ask dockerd, until it shows the endpoint's container, for its DNS
        names and network name (and its labels when labelling), and record
        them on the WorkloadEndpoint, where every host's agent reads them."""
        threading.current_thread().name = f"learn-ep-{endpoint_id[:12]}"  # for logs, profilers
        container, _ = _ask_until_shown(
            lambda: self.docker.endpoint_container(network_id, endpoint_id),
            self.settings.label_poll_timeout, max_delay=0.2, first_delay=CONTAINER_SHOWN_SECONDS)
        if container is None:
            LOG.warning("dockerd did not show the container of endpoint %s within %.1fs: its "
                        "DNS names (and container labels) wait, asked for again for up to %.0fs",
                        endpoint_id[:12], self.settings.label_poll_timeout, LATE_LEARN_SECONDS)
            self._ask_later(network_id, endpoint_id, time.monotonic(), LATE_ASK_DELAYS[0])
            return
        self.record_container(endpoint_id, container)

    def _ask_later(self, network_id, endpoint_id, since, delay):
        # A daemon timer, not a learner thread: learners stay free for new
        # Joins, and no exit waits for a container that may never show.
        timer = threading.Timer(delay, self._learn_late, args=(network_id, endpoint_id, since))
        timer.daemon = True
        timer.name = f"learn-late-{endpoint_id[:12]}"
        timer.start()

    def _learn_late(self, network_id, endpoint_id, since):
        """One more question about a container dockerd did not show in time;
        the next one later, while its WorkloadEndpoint exists, for up to
        LATE_LEARN_SECONDS."""
        if self._closed.is_set():
            return
        container = self.docker.endpoint_container(network_id, endpoint_id)
        if container is not None:
            self.record_container(endpoint_id, container)
            return
        waited = time.monotonic() - since
        try:
            stored = self._stored_wep(endpoint_id) is not None
        except DatastoreError:
            stored = True  # etcd's turn to be away: keep asking dockerd
        if not stored:
            return  # deleted meanwhile: nothing to name
        if waited >= LATE_LEARN_SECONDS:
            LOG.warning("endpoint %s has no DNS names (nor container labels): dockerd did not "
                        "show its container within %.0fs", endpoint_id[:12], waited)
            return
        self._ask_later(network_id, endpoint_id, since,
                        min(LATE_ASK_DELAYS[1], max(LATE_ASK_DELAYS[0], waited)))

    def record_container(self, endpoint_id, container) -> bool:
        """Write the container's DNS names, network name, Swarm service labels
        (and its own labels when labelling) on the endpoint's WorkloadEndpoint,
        in one compare-and-swap; False when it was deleted meanwhile (it stays
        deleted) or etcd failed."""
        labels = ep.container_labels(container.labels, self.settings.label_endpoints)
        annotations = ep.names_annotations(container.network, container.dns_names)

        def mutate(wep: Resource) -> Resource | None:
            if (all(wep.labels.get(k) == v for k, v in labels.items())
                    and all(wep.annotations.get(k) == v for k, v in annotations.items())):
                return None
            wep.labels.update(labels)
            wep.annotations.update(annotations)
            return wep
        known = self._weps.get(endpoint_id)
        try:
            wep = self.resources.modify(
                "WorkloadEndpoint", ep.wep_name(self.settings.nodename, endpoint_id), mutate,
                namespace=ep.NAMESPACE, known=known.wep if known else None)
        except ResourceNotFound:
            return False  # removed meanwhile
        except DatastoreError as exc:
            LOG.error("could not record the DNS names of endpoint %s: %s", endpoint_id[:12],
                      exc)
            return False
        self._weps.replace(endpoint_id, lambda known: known._replace(wep=wep))
        return True

    def _wep(self, endpoint_id) -> Resource | None:
        """The endpoint's WorkloadEndpoint as this process last wrote it,
        else as stored (and then remembered)."""
        known = self._weps.get(endpoint_id)
        if known is not None:
            return known.wep
        wep = self._stored_wep(endpoint_id)
        if wep is not None:
            self._weps.put(endpoint_id, _Known(wep))
        return wep

    def _stored_wep(self, endpoint_id) -> Resource | None:
        return self.resources.get("WorkloadEndpoint",
                                  ep.wep_name(self.settings.nodename, endpoint_id), ep.NAMESPACE)

    def delete_endpoint(self, network_id, endpoint_id):
        # The veth's deletion takes its routes along (Leave removed them
        # already, unless dockerd saw Join fail).
        self.reaper.delete(ep.host_ifname(endpoint_id))
        known = self._weps.pop(endpoint_id)
        if known is None:
            wep = self._stored_wep(endpoint_id)
            if wep is None:
                return {}
            known = _Known(wep)
        self.sandboxes.remove_endpoint(known.wep, known.claim_revision)
        self.holders.remove(endpoint_id, known.wep.spec.get("ipNetworks") or ())
        return {}

    def drop_stale_endpoint(self, address) -> None:
        """ReleaseAddress is about to free address: an endpoint of this node
        still holding it lost its DeleteEndpoint (driver/holders.py)."""
        endpoint_id = self.holders.holder(address)
        if endpoint_id:
            LOG.warning("endpoint %s still holds %s, which dockerd is releasing: its "
                        "DeleteEndpoint never reached the plugin; deleting it now",
                        endpoint_id[:12], address)
            self.delete_endpoint(None, endpoint_id)

    # -- join / leave --------------------------------------------------

    def join(self, network_id, endpoint_id, sandbox_key, options):
        wep = self._wep(endpoint_id)
        if wep is None:
            raise UnknownEndpoint(
                f"endpoint {endpoint_id[:12]} is unknown to Calico: its CreateEndpoint did "
                "not reach this plugin's datastore; remove the container and start it again")
        # dockerd joins an endpoint to its sandbox again after Leave when a
        # legacy link is removed (Sandbox.Refresh); it keeps the connected
        # routes of the first Join on the interface, and would add them twice.
        rejoined = bool(sandbox_key) and wep.annotations.get(ep.SANDBOX_ANNOTATION) == sandbox_key
        # The claim's etcd round trip and the veth's netlink requests both
        # wait on other processes: overlapped, Join costs the longer of them.
        claim = self._claims.submit(self._claim_sandbox, wep, sandbox_key) if sandbox_key else None
        host_if, temp_if = ep.host_ifname(endpoint_id), ep.temp_ifname(endpoint_id)
        v4, v6 = _split_addresses(wep.spec.get("ipNetworks", []))
        try:
            dataplane.set_up_veth(host_if, temp_if, v4, v6, mtu=self.settings.veth_mtu,
                                  mac=wep.spec.get("mac") or None,
                                  proc_sys=self.settings.proc_sys,
                                  published=bool(ep.published_ports(wep)))
        except KernelError as exc:
            # The claim goes with the endpoint: dockerd deletes it next.
            if claim is not None:
                claim.exception()  # done, whichever way, before the answer
            raise DriverError(f"could not set up the veth for endpoint {endpoint_id[:12]}: "
                              f"{exc}") from exc
        if claim is not None:
            try:
                wep = claim.result()
            except Exception:
                if not rejoined:  # a pair this Join made; a rejoined one goes at DeleteEndpoint
                    self.reaper.delete(host_if)
                raise
            self._weps.put(endpoint_id, _Known(wep, claim_revision=wep.revision))
        answer = {
            "InterfaceName": {"SrcName": temp_if, "DstPrefix": self.settings.ifprefix},
            "Gateway": IPV4_GATEWAY,
            "StaticRoutes": [{"Destination": IPV4_GATEWAY + "/32", "RouteType": 1}],
            "DisableGatewayService": False,
        }
        if v6:
            answer["GatewayIPv6"] = IPV6_GATEWAY
            answer["StaticRoutes"].append({"Destination": IPV6_GATEWAY + "/128",
                                           "RouteType": 1})
        if rejoined:
            answer["StaticRoutes"] = []
        # Its DNS names (and labels) are learned from dockerd in the background:
        # dockerd shows the container only once it has this answer.
        self._learners.submit(self._learn_endpoint, network_id, endpoint_id)
        return answer

    def _claim_sandbox(self, wep, sandbox_key) -> Resource:
        try:
            return self.sandboxes.claim(
                wep, sandbox_key, is_live=lambda other: self._stored_wep(other) is not None)
        except SandboxTaken as taken:
            other = self._stored_wep(taken.holder)
            other_net = other.annotations.get(ep.NETWORK_ID_ANNOTATION, "") if other else ""
            raise DriverError(
                "this container is already on a Calico network (endpoint "
                f"{taken.holder[:12]}, network {other_net[:12]}); a container can join only one "
                "Calico network, because each brings the same gateway 169.254.1.1. "
                "Disconnect it from that network first, or use one network with several "
                "profiles via policy") from None

    def leave(self, network_id, endpoint_id):
        """Cut the container off: its host routes go.  The veth (see
        driver/reaper.py), the WorkloadEndpoint and the sandbox claim stay
        for DeleteEndpoint, which dockerd sends after every Leave, unless
        it joins the endpoint again (see driver/sandboxes.py)."""
        wep = self._wep(endpoint_id)
        if wep is not None:
            v4, v6 = _split_addresses(wep.spec.get("ipNetworks", []))
            # Only routes through this endpoint's interface: the address may
            # already belong to a newer endpoint.
            dataplane.remove_routes(v4, v6, host_ifname=wep.spec["interfaceName"])
        return {}


class _Known(NamedTuple):
    """What this process wrote last of an endpoint: a hint, as every write
    compares revisions (a stale one costs a retry, not a wrong write)."""
    wep: Resource  # with the revision it was written (or read) at
    claim_revision: int | None = None  # its sandbox claim's, when this process made it


def _ask_until_shown(question, seconds, max_delay, first_delay=0.0):
    """Ask dockerd question() until it shows what is asked about (answers
    other than None), for at most `seconds`: dockerd shows a network or a
    container only after the plugin call that makes it has returned.  Waits
    first_delay before the first question, then 50 ms between questions,
    doubling up to max_delay.  Returns the answer, or None and why the last
    question failed (DockerUnavailable; None when dockerd answered but did
    not show it)."""
    deadline = time.monotonic() + seconds
    backoff, failure = Backoff(0.05, max_delay), None
    time.sleep(first_delay)
    while time.monotonic() < deadline:
        try:
            answer = question()
        except DockerUnavailable as exc:
            answer, failure = None, exc
        if answer is not None:
            return answer, None
        time.sleep(backoff.next())
    return None, failure


def _check_options(options):
    """Refuse what Calico cannot honour, naming the flags (Calico's texts)."""
    if options.get(OPT_IPV4) is False:  # Docker >= 28: --ipv4=false
        raise UnsupportedOption(IPV6_ONLY_REFUSED)
    refused = []
    for key, value in sorted(options.items()):
        if key in (OPT_IPV4, OPT_IPV6):
            continue
        if isinstance(value, bool):
            if value:
                refused.append("--" + key.removeprefix(OPT_PREFIX))
        elif isinstance(value, dict):
            refused.extend(sorted(value))
        elif value not in (None, ""):
            refused.append(f"{key} ({value})")
    if len(refused) == 1:
        raise UnsupportedOption(f"Calico driver does not support the flag {refused[0]}.")
    if refused:
        raise UnsupportedOption(
            f"Calico driver does not support the flags {', '.join(refused)}.")


def _not_calico_ipam(network_id, family) -> str:
    if len(network_id) == SWARM_ID_LENGTH:
        # Swarm keeps no IPAM for a node-local driver's network: only the
        # config-only network it is made from brings one to each node.
        return (f"Non-Calico IPAM driver is used{family}: swarm network {network_id} was "
                "created without --config-from, so Docker's default IPAM serves it. Run "
                "`docker network create --config-only --ipam-driver calico:latest NAME-cfg` "
                "on every node, then on a manager `docker network create -d calico:latest "
                "--scope swarm --config-from NAME-cfg --attachable NAME`, and use that network.")
    return (f"Non-Calico IPAM driver is used{family}. Use --ipam-driver calico-ipam with "
            "--driver calico.")


def _endpoint_addresses(interface) -> list[str]:
    nets = []
    for field, width in (("Address", 32), ("AddressIPv6", 128)):
        if interface[field]:
            nets.append(f"{netaddr.IPNetwork(interface[field]).ip}/{width}")
    if not nets:
        raise DriverError("No address assigned for endpoint; use --ipam-driver calico-ipam")
    return nets


def _split_addresses(ip_networks) -> tuple[list[str], list[str]]:
    v4, v6 = [], []
    for net in ip_networks:
        addr = netaddr.IPNetwork(net).ip
        (v4 if addr.version == 4 else v6).append(str(addr))
    return v4, v6
