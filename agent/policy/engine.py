"""Isolation between networks without Felix: the agent's policy engine.

It is a view of the agent's follower (workload endpoints of every host,
Profiles, GlobalNetworkPolicies, FelixConfigurations) and keeps our nftables
table in step:
a remote endpoint coming or going changes set elements only; a local
endpoint's change compiles its own chains again, a profile or policy change
all chains, a FelixConfiguration change only wl-to-host, and the renderer
sends only what differs.  Stopping removes the
table, so a stopped agent leaves the host as it found it.
"""

import dataclasses
import datetime
import logging
import os
import time

from agent import nftables
from agent.routing import kernel
from agent.status_file import PacedStatus, write_status
from agent.policy.compiler import Compiler, set_name
from agent.policy.guarded import guarded_destinations
from agent.policy.membership import Membership
from agent.policy.nft import SET_TYPES, PolicyTable, Ruleset, base_chains
from agent.policy.state import PolicyState
from agent.policy.tunnels import HOSTS, Encapsulation, tunnel_chains
from datastore.felix_configuration import FelixSettings, resolve
from datastore.policy import GlobalNetworkPolicy, Profile
from datastore.records import GLOBAL_NETWORK_POLICIES, PROFILES
from kernel.errors import KernelError
from metrics import instruments

LOG = logging.getLogger(__name__)


def _moved(kind: str, members: frozenset[str], gained: set[str], lost: set[str]
           ) -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """An address set's members after its selector gained and lost these
    addresses (of either family), and those of its own family it gained and
    lost; None when it gained and lost none of them."""
    six = kind == SET_TYPES[6]
    gained = frozenset(a for a in gained if (":" in a) == six)
    lost = frozenset(a for a in lost if (":" in a) == six)
    if not (gained or lost):
        return None
    return members.difference(lost).union(gained), gained, lost


class PolicyEngine:
    kinds = PolicyState.kinds

    def __init__(self, nodename: str, status_path: str, resync_interval: float = 30.0,
                 felix_env: FelixSettings = FelixSettings(), etcd_endpoints=()):
        self.nodename = nodename
        self.status_path = status_path
        self.status = PacedStatus(status_path)
        self.resync_interval = resync_interval
        # the FELIX_* variables: they win over every FelixConfiguration
        self.felix_env = felix_env
        self.etcd_endpoints = tuple(etcd_endpoints)  # guarded from workloads
        self.nft = PolicyTable()
        self._programmed = False  # the first programming is not timed, as Felix's
        self.reset()

    def reset(self) -> None:
        """Forget everything: a new snapshot follows."""
        self.state = PolicyState()
        self.membership = Membership()
        self.compiler = Compiler(self.nodename, guarded_destinations(self.etcd_endpoints))
        self._chains = None  # compiled chains; None: compile what is stale
        # selector -> its sets (name -> (type, members)), while its members stay
        self._sets: dict = {}
        self._maps = None  # compiled chains, and the workload maps of their interfaces
        self._rendered = None  # (desired()'s inputs, the chains and base chains they gave)
        self._status_of = None  # (_write_status's inputs, the part of the status they give)
        self._host_addresses: dict[str, frozenset[str]] = {}
        self._endpoints_changed: set[str] = set()
        self._relabel = False
        self._full = True
        self._last_full = 0.0

    def on_change(self, kind, key: str, record) -> bool:
        """Record one key's record; False when policy sees no change in it
        (then batch_done has nothing to do for it: no compile, no nft)."""
        before = self.state.endpoints.get(key)
        if kind in (GLOBAL_NETWORK_POLICIES, PROFILES):
            name = key[len(kind.prefix):]
            held = self.state.policies if kind is GLOBAL_NETWORK_POLICIES \
                else self.state.profiles
            before = held.get(name)
        what = self.state.on_change(kind, key, record)
        if what is None:
            return False
        if what in ("felix", "tunnels"):
            return True  # desired() reads it afresh
        if what == "endpoint":
            self._endpoints_changed.add(key)
            after = self.state.endpoints.get(key)
            if not (self._local(before) or self._local(after)):
                return True  # set elements only
            self.compiler.forget(key)
        elif what == "profile":
            # A profile's rules are its own chains; its labels, what its
            # endpoints' labels are (the compiler recomputes its endpoints).
            self.compiler.forget_rules("profile", name)
            if _labels_to_apply(before) != _labels_to_apply(held.get(name)):
                self._relabel = True
        elif _rules_only(before, held.get(name)):
            self.compiler.forget_rules("policy", name)  # selects as before
        else:
            self.compiler.forget_all()
        self._chains = None
        return True

    def batch_done(self, changed: bool, snapshot: bool) -> None:
        if snapshot:
            self._full = True
        if not (changed or self._full
                or time.monotonic() - self._last_full > self.resync_interval):
            return
        try:
            self.sync()
        except KernelError as exc:
            LOG.error("policy not programmed: %s (retrying with a full rewrite)", exc)
            self._full = True

    def sync(self) -> None:
        started = time.monotonic()
        periodic = not self._full and started - self._last_full > self.resync_interval
        if periodic:
            # Someone may have deleted our table (nft flush ruleset): repair it.
            self._full = not self.nft.present()
            self._last_full = started
            self._guard(guarded_destinations(self.etcd_endpoints))  # names may move
        desired = self.compute()
        if self._full:
            self.nft.programmed = None
        self.nft.program(desired)
        if self._full or periodic:
            nftables.release_freed_memory()
        if self._full:
            self._last_full = started
        self._full = False
        if self._programmed:
            instruments.dataplane_applied(time.monotonic() - started)
        self._programmed = True
        self._write_status(started)

    def compute(self) -> Ruleset:
        """The ruleset the records call for: what is stale compiled again,
        the sets' members brought up to date (`check` calls it after a
        snapshot, to compare with the kernel without programming it)."""
        if self.state.matches_by_address(self.nodename):
            self._host_interfaces(host_addresses())
        compiled = self._chains is None
        if compiled:
            self._chains = self.compiler.compile(self.state, self._host_addresses)
        changed = self._endpoints_changed
        if self._relabel:
            changed |= set(self.membership.relabelled(self.state, changed))
        for key in changed:
            self.membership.update(self.state, key)
        if compiled:  # after the updates: each label set evaluated once against new selectors
            self.membership.set_selectors(self.state, self._chains.selectors)
        self._endpoints_changed, self._relabel = set(), False
        return self.desired()

    def _host_interfaces(self, addresses: dict[str, frozenset[str]]) -> None:
        """The host's addresses by interface, which pick the interfaces of
        host endpoints without interfaceName; read at each sync (a change,
        or the resync interval) while there are such endpoints."""
        if addresses != self._host_addresses:
            self._host_addresses = addresses
            self._chains = None

    def _guard(self, guarded) -> None:
        if guarded != self.compiler.guarded:
            self.compiler.guarded = guarded
            self.compiler.forget_all()
            self._chains = None

    def desired(self) -> Ruleset:
        """What the table holds now; the sets and maps that did not change
        are the objects last programmed (the renderer skips them at once)."""
        chains = self._chains
        moves = {}  # Ruleset.moves
        for selector, moved in self.membership.moved().items():
            held = self._sets.get(selector)
            if held is not None and moved is None:
                del self._sets[selector]
            elif held is not None:
                for name, (kind, members) in list(held.items()):
                    if (now := _moved(kind, members, *moved)) is not None:
                        held[name] = (kind, now[0])
                        moves[name] = (members, *now[1:])
        sets = {}
        for selector in chains.selectors:
            held = self._sets.get(selector)
            if held is None:
                members = self.membership.members(selector)
                held = self._sets[selector] = {set_name(selector, family): (kind, frozenset(
                    a for a in members if (":" in a) == (family == 6)))
                    for family, kind in SET_TYPES.items()}
            sets.update(held)
        if len(self._sets) > len(chains.selectors):
            self._sets = {s: held for s, held in self._sets.items() if s in chains.selectors}
        before = self._maps
        if before is None or (before[0].ingress, before[0].egress) != \
                (chains.ingress, chains.egress):
            self._maps = (chains, Ruleset.workload_maps(chains, before))
        for family, name in HOSTS.items():
            sets[name] = (SET_TYPES[family], self.state.host_addresses(family))
        encapsulation = self.encapsulation()
        felix = tuple(self.felix(name)[0] for name in _DISPATCH_SETTINGS)
        inputs = (chains, encapsulation, felix)
        if self._rendered is None or self._rendered[0] != inputs:
            # The same objects while their inputs are: most batches (other
            # hosts' endpoints) change sets alone, and the table compares
            # its chains by identity first.
            self._rendered = (inputs, {**chains.rules, **tunnel_chains(encapsulation),
                                       **Ruleset.dispatch(chains, *felix)},
                              base_chains(chains))
        return Ruleset(sets, self._rendered[1], self._maps[1], self._rendered[2], moves)

    def encapsulation(self) -> Encapsulation:
        return Encapsulation.of(self.state.pools.values())

    def felix(self, field: str) -> tuple:
        """A FelixConfiguration field's value now, and where it comes from."""
        return resolve(field, self.felix_env, self.nodename, self.state.felix)

    def stop(self) -> None:
        """Remove our table and status: the host as it was without us."""
        self.status.cancel()
        remove_policy(self.status_path)

    def _local(self, endpoint) -> bool:
        return endpoint is not None and endpoint.node == self.nodename

    def _write_status(self, started: float) -> None:
        chains = self._chains
        settings = tuple(self.felix(name) for name in _DISPATCH_SETTINGS)
        inputs = (chains, self.compiler.guarded, settings)
        if self._status_of is None or self._status_of[0] != inputs:
            # What the chains and settings say, worked out when they change,
            # not at each batch of other hosts' endpoints.
            (action, source), *failsafe = settings
            self._status_of = (inputs, {
                "enabled": True,
                "defaultEndpointToHostAction": {"value": action, "source": source},
                "hostEndpoints": sorted(chains.host.get("from-hep", ())),
                "failsafe": {direction: {"value": [str(p) for p in ports], "source": where}
                             for direction, (ports, where) in zip(("inbound", "outbound"),
                                                                  failsafe)},
                "guarded": [str(g) for g in sorted(self.compiler.guarded)],
                "endpoints": len(chains.ingress),
                "rules": chains.rule_count,
                "sets": len(chains.selectors) * len(SET_TYPES),
            })
        self.status.write({
            **self._status_of[1],
            "clusterEndpoints": len(self.state.endpoints),
            # VXLAN/IPIP accepted from these hosts only; from others dropped when in use
            "calicoHosts": {f"ipv{v}": len(self.state.host_addresses(v)) for v in HOSTS},
            "encapsulation": [name for name, used in vars(self.encapsulation()).items()
                              if used],
            "programmed": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "milliseconds": round((time.monotonic() - started) * 1000, 1),
        })


# The FelixConfiguration fields the dispatch chains are made of (Ruleset.dispatch's order).
_DISPATCH_SETTINGS = ("default_endpoint_to_host_action", "failsafe_inbound_host_ports",
                      "failsafe_outbound_host_ports")


def _labels_to_apply(profile) -> dict:
    return dict(profile.labels_to_apply) if isinstance(profile, Profile) else {}


def _rules_only(before: GlobalNetworkPolicy | None, after: GlobalNetworkPolicy | None) -> bool:
    """Whether a policy changed its rules alone: it selects the same
    endpoints, in the same place, for the same kinds of chain."""
    return before is not None and after is not None and \
        dataclasses.replace(before, ingress=after.ingress, egress=after.egress) == after


def host_addresses() -> dict[str, frozenset[str]]:
    """This host's global addresses (IPv4 and IPv6) by interface."""
    found = {}
    for version in (4, 6):
        for address in kernel.addresses(version):
            found.setdefault(address.ifname, set()).add(str(address.network.ip))
    return {name: frozenset(held) for name, held in found.items()}


def policy_off(status_path: str) -> None:
    """Policy is left to Felix: no table of ours (one may be left by an
    earlier run with policy on), and a status file saying so, so that
    `status` tells it whatever its own environment says."""
    remove_policy()
    try:
        write_status(status_path, {"enabled": False})
    except OSError as exc:
        LOG.error("could not write %s: %s", status_path, exc)


def remove_policy(status_path: str | None = None) -> None:
    """Delete our table and status file if present; never raises."""
    if nftables.available():
        try:
            PolicyTable().remove()
            LOG.info("policy table removed")
        except KernelError as exc:
            LOG.error("could not remove the policy table: %s", exc)
    if status_path:
        try:
            os.unlink(status_path)
        except FileNotFoundError:
            pass
