"""Selector membership kept one endpoint at a time (agent/policy/membership.py),
and the PolicyEngine that turns it and the compiled chains into nft scripts,
with no kernel: agent.policy.nft.run records the scripts instead of running
them, and the engine's clock is a test clock."""

import datetime
import json
import random
from types import SimpleNamespace

import pytest

from agent.policy import engine as engine_module
from agent.policy import nft
from agent.policy.compiler import set_name
from agent.policy.engine import PolicyEngine
from agent.policy.membership import Membership
from agent.nftables import INTERFACE_MAP
from agent.policy.nft import FAMILY, FROM_WL_MAP, TABLE, TO_WL_MAP, PolicyTable, full_script
from datastore.selector import parse
from kernel.errors import KernelError
from tests.agent.policy_records import (NODE, OTHER_NODE, gnp, gone, interface, profile,
                                        state_of, wep)
from tests.introspect import tracked_selectors
from tests.introspect import feed as on_change

DB, NET1, TIER_A, TIER_B = (parse(s) for s in ("role == 'db'", "has(net1)", "tier == 'a'",
                                               "tier == 'b'"))
T = f"{FAMILY} {TABLE}"


def tracking(*selectors, records=()):
    state = state_of(*records)
    membership = Membership()
    membership.set_selectors(state, set(selectors))
    return state, membership


def change(state, membership, *records):
    for key, value in records:
        on_change(state, key, value)
        membership.update(state, key)


def members(membership, *selectors):
    return [membership.members(s) for s in selectors]


# ---------------------------------------------------------------------------
# Membership

NETWORKS = (profile("net1"), profile("net2"),
            wep("a", "10.0.0.1", "fd00::1", labels={"role": "db"}),
            wep("b", "10.0.0.2", profiles=("net2",), labels={"role": "db"}),
            wep("r", "10.0.0.3", node=OTHER_NODE))


def test_set_selectors_adds_and_removes_selectors():
    state, membership = tracking(DB, records=NETWORKS)
    assert tracked_selectors(membership) == {DB}
    assert members(membership, DB, NET1) == [{"10.0.0.1", "fd00::1", "10.0.0.2"}, set()]
    membership.set_selectors(state, {DB, NET1})
    assert members(membership, DB, NET1) == [{"10.0.0.1", "fd00::1", "10.0.0.2"},
                                             {"10.0.0.1", "fd00::1", "10.0.0.3"}]
    membership.set_selectors(state, {NET1})
    assert tracked_selectors(membership) == {NET1}
    assert members(membership, DB) == [set()]
    # The dropped selector is forgotten everywhere: changes and re-adding work.
    change(state, membership, wep("a", "10.0.0.1", "fd00::1"), gone(wep("r", node=OTHER_NODE)))
    assert members(membership, NET1) == [{"10.0.0.1", "fd00::1"}]
    membership.set_selectors(state, {DB, NET1})
    assert members(membership, DB, NET1) == [{"10.0.0.2"}, {"10.0.0.1", "fd00::1"}]


def test_update_follows_an_endpoint_through_its_life():
    state, membership = tracking(DB, NET1, records=NETWORKS[:2])
    steps = [  # (the endpoint's new record, members of DB and NET1 after it)
        (wep("x", "10.0.0.9", labels={"role": "db"}), [{"10.0.0.9"}, {"10.0.0.9"}]),
        (wep("x", "10.0.0.9", labels={"role": "web"}), [set(), {"10.0.0.9"}]),  # relabelled
        (wep("x", "10.0.0.9", labels={"role": "db"}, profiles=("net2",)),  # other network
         [{"10.0.0.9"}, set()]),
        (wep("x", "10.0.0.8", "fd00::8", labels={"role": "db"}),  # new addresses
         [{"10.0.0.8", "fd00::8"}, {"10.0.0.8", "fd00::8"}]),
        (gone(wep("x")), [set(), set()]),
    ]
    for record, after in steps:
        change(state, membership, record)
        assert members(membership, DB, NET1) == after, record


@pytest.mark.parametrize("last_leaves", [
    gone(wep("y")), wep("y", "10.0.0.5", profiles=("net2",)), wep("y", "10.0.0.6")],
    ids=["deleted", "relabelled", "readdressed"])
def test_an_address_two_endpoints_share_stays_until_both_are_gone(last_leaves):
    state, membership = tracking(NET1, records=NETWORKS[:2])
    change(state, membership, wep("x", "10.0.0.5"), wep("y", "10.0.0.5", node=OTHER_NODE))
    assert members(membership, NET1) == [{"10.0.0.5"}]
    change(state, membership, gone(wep("x")))
    assert members(membership, NET1) == [{"10.0.0.5"}]
    change(state, membership, (wep("y", node=OTHER_NODE)[0], last_leaves[1]))
    assert "10.0.0.5" not in membership.members(NET1)


def test_moved_says_what_each_selector_gained_and_lost_since_last_asked():
    state, membership = tracking(DB, NET1, records=NETWORKS)
    assert membership.moved() == {DB: None, NET1: None}  # new: members() has them
    change(state, membership, wep("x", "10.0.0.7", labels={"role": "db"}),
           wep("y", "10.0.0.1", node=OTHER_NODE, labels={"role": "db"}))  # a's address too
    assert membership.moved() == {DB: ({"10.0.0.7"}, set()), NET1: ({"10.0.0.7"}, set())}
    change(state, membership, gone(wep("a")), gone(wep("x")), wep("x", "10.0.0.7"))
    # a's 10.0.0.1 stays with y; x left DB, and net1 lost and got 10.0.0.7 back
    assert membership.moved() == {DB: (set(), {"10.0.0.7", "fd00::1"}),
                                  NET1: (set(), {"fd00::1"})}
    assert membership.moved() == {}


def test_relabelled_lists_the_endpoints_a_profile_change_relabels():
    state, membership = tracking(TIER_A, TIER_B, records=(
        profile("p", labels={"tier": "a"}), profile("q", labels={"tier": "a"}),
        wep("x", "10.0.0.1", profiles=("p",)),
        wep("own", "10.0.0.2", profiles=("p",), labels={"tier": "a"}),  # own labels win
        wep("later", "10.0.0.3", profiles=("q", "p")),  # q comes first
        wep("other", "10.0.0.4", profiles=("q",))))
    assert membership.relabelled(state) == []
    on_change(state, *profile("p", labels={"tier": "b"}))
    assert membership.relabelled(state) == [wep("x")[0]]
    for key in membership.relabelled(state):
        membership.update(state, key)
    assert membership.relabelled(state) == []
    assert members(membership, TIER_A, TIER_B) == [{"10.0.0.2", "10.0.0.3", "10.0.0.4"},
                                                   {"10.0.0.1"}]
    on_change(state, *gone(profile("q")))
    assert sorted(membership.relabelled(state)) == sorted([wep("later")[0], wep("other")[0]])


# ---------------------------------------------------------------------------
# PolicyEngine without a kernel

@pytest.fixture
def scripts(monkeypatch):
    """Every script the engine sends to nft, and every change of elements
    alone or of chains' rules it sends through nfnetlink (as ("elements",
    changes), ("rules", changes, chains)), in order."""
    sent = []
    monkeypatch.setattr(nft, "run", sent.append)
    monkeypatch.setattr(nft, "inet_elements",
                        lambda table, changes: sent.append(("elements", changes)))
    monkeypatch.setattr(nft, "inet_rules",
                        lambda table, changes, chains: sent.append(("rules", changes, chains)))
    return sent


@pytest.fixture
def clock(monkeypatch):
    """The engine's time.monotonic(): clock.now, moved by hand."""
    now = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(monotonic=lambda: now.now))
    return now


@pytest.fixture
def engine(scripts, clock, tmp_path):
    return PolicyEngine(NODE, str(tmp_path / "run" / "policy.json"), resync_interval=30)


def feed(engine, *records, snapshot=False):
    """One watch batch."""
    changed = [on_change(engine, key, value) for key, value in records]
    engine.batch_done(any(changed), snapshot)


def fresh(*records, status_path):
    """The ruleset an engine started on these records programs."""
    engine = PolicyEngine(NODE, status_path)
    feed(engine, *records, snapshot=True)
    return engine.nft.programmed


def test_the_first_batch_writes_the_whole_table_then_only_differences(engine, scripts):
    feed(engine, *NETWORKS, snapshot=True)
    assert scripts == [full_script(engine.nft.programmed)]
    assert scripts[0].startswith(f"add table {T}\ndelete table {T}\n")
    # A local endpoint of net1, as a: a's chains, an element in each
    # interface map, its address in net1's set; no chain written, so no
    # script: the elements alone, through nfnetlink.
    feed(engine, wep("c", "10.0.0.4"))
    programmed = engine.nft.programmed
    ingress, egress = (programmed.maps[name][1] for name in (TO_WL_MAP, FROM_WL_MAP))
    a_in, a_out = (next(e.split("goto ")[1] for e in elements if interface("a") in e)
                   for elements in (ingress, egress))
    assert scripts[1] == ("elements", [
        (set_name(NET1, 4), "ipv4_addr", {"10.0.0.4"}, set()),
        (FROM_WL_MAP, INTERFACE_MAP, {f'"{interface("c")}" : goto {a_out}'}, set()),
        (TO_WL_MAP, INTERFACE_MAP, {f'"{interface("c")}" : goto {a_in}'}, set())])
    # One with a profile of its own: its chains too, in the same script.
    feed(engine, profile("net3"), wep("d", "10.0.0.5", profiles=("net3",)))
    lines = scripts[2].splitlines()
    assert f"add element {T} {set_name(NET1, 4)} {{ 10.0.0.4 }}" not in lines
    d_in = next(e.split("goto ")[1] for e in engine.nft.programmed.maps[TO_WL_MAP][1]
                if interface("d") in e)
    assert lines.index(f"add chain {T} {d_in}") < lines.index(
        f'add element {T} {TO_WL_MAP} {{ "{interface("d")}" : goto {d_in} }}')
    assert not any("table" in line.split()[:2] or line.startswith("flush") for line in lines)


def test_a_remote_endpoint_batch_changes_set_elements_only(engine, scripts):
    feed(engine, *NETWORKS)
    chains = dict(engine.nft.programmed.chains)
    remote = wep("s", "10.0.9.9", "fd00::9", node=OTHER_NODE)
    feed(engine, remote)
    feed(engine, gone(remote))
    v4, v6 = {"10.0.9.9"}, {"fd00::9"}
    assert scripts[1:] == [
        ("elements", [(set_name(NET1, 4), "ipv4_addr", v4, set()),
                     (set_name(NET1, 6), "ipv6_addr", v6, set())]),
        ("elements", [(set_name(NET1, 4), "ipv4_addr", set(), v4),
                     (set_name(NET1, 6), "ipv6_addr", set(), v6)])]
    assert engine.nft.programmed.chains == chains


def test_a_batch_that_changes_nothing_sends_nothing(engine, scripts):
    feed(engine, *NETWORKS)
    assert on_change(engine, "/calico/resources/v3/projectcalico.org/ippools/p", b"{}") is False
    feed(engine, ("/calico/resources/v3/projectcalico.org/ippools/p", b"{}"))
    feed(engine, NETWORKS[-1])  # the same record again
    assert [on_change(engine, key, value) for key, value in NETWORKS] == [False] * len(NETWORKS)
    assert len(scripts) == 1


def test_status_file(engine, clock):
    feed(engine, *NETWORKS)
    with open(engine.status_path) as f:
        status = json.load(f)
    programmed = datetime.datetime.fromisoformat(status.pop("programmed"))
    assert programmed.tzinfo is not None
    assert abs(datetime.datetime.now(datetime.timezone.utc) - programmed).total_seconds() < 60
    assert status == {
        "enabled": True,
        "endpoints": 2,  # a and b, on this node
        # per endpoint: ingress clear, jump, return, drop; egress also the VXLAN
        # and IPIP drops; net1's and net2's profile chains: one rule per family
        # and direction
        "rules": 2 * (4 + 6) + 2 * 2 * 2,
        "sets": 2 * 2,  # has(net1), has(net2): IPv4 and IPv6 each
        "clusterEndpoints": 3,
        "calicoHosts": {"ipv4": 0, "ipv6": 0},  # no Node records fed
        "encapsulation": [],  # nor pools
        "milliseconds": 0.0,  # the test clock stood still
        "defaultEndpointToHostAction": {"value": "Drop", "source": "default"},
        "guarded": [],
        "hostEndpoints": [],
        "failsafe": {  # Felix's defaults
            "inbound": {"value": ["tcp:22", "udp:68", "tcp:179", "tcp:2379", "tcp:2380",
                                  "tcp:5473", "tcp:6443", "tcp:6666", "tcp:6667"],
                        "source": "default"},
            "outbound": {"value": ["udp:53", "udp:67", "tcp:179", "tcp:2379", "tcp:2380",
                                   "tcp:5473", "tcp:6443", "tcp:6666", "tcp:6667"],
                         "source": "default"}},
    }


@pytest.mark.parametrize("present, rewritten", [(False, True), (True, False)])
def test_a_resync_rewrites_the_table_when_it_is_missing(engine, scripts, clock, monkeypatch,
                                                        present, rewritten):
    asked = []
    monkeypatch.setattr(PolicyTable, "present", lambda self: asked.append(1) or present)
    feed(engine, *NETWORKS)
    clock.now += 29
    engine.batch_done(False, False)
    assert asked == [] and len(scripts) == 1  # not due yet
    clock.now += 2
    engine.batch_done(False, False)
    assert asked == [1]
    assert scripts[1:] == ([full_script(engine.nft.programmed)] if rewritten else [])
    engine.batch_done(False, False)  # checked again only after another interval
    assert asked == [1]


def test_after_a_failed_script_the_next_batch_rewrites_the_table(engine, scripts, monkeypatch):
    feed(engine, *NETWORKS)

    def fail_once(script):
        monkeypatch.setattr(nft, "run", scripts.append)
        raise KernelError("nft: boom")
    monkeypatch.setattr(nft, "run", fail_once)
    # a profile of its own: chains to write, a script
    feed(engine, profile("net3"), wep("c", "10.0.0.4", profiles=("net3",)))  # logged, not raised
    assert engine.nft.programmed is None
    engine.batch_done(False, False)
    assert scripts[1:] == [full_script(engine.nft.programmed)]
    assert any(interface("c") in e for e in engine.nft.programmed.maps[TO_WL_MAP][1])


def test_a_snapshot_rewrites_the_table(engine, scripts):
    feed(engine, *NETWORKS)
    engine.reset()
    feed(engine, *NETWORKS[:3], snapshot=True)
    assert scripts[1] == full_script(engine.nft.programmed)
    assert wep("b")[0] not in engine.state.endpoints


# Batches after which an engine that followed them must program what a
# fresh engine fed the same records programs.
BATCHES = [
    ("start", [profile("net1", labels={"net1": "", "tier": "a"}), profile("net2"),
               wep("a", "10.0.0.1"), wep("b", "10.0.0.2", profiles=("net2",)),
               wep("r", "10.0.0.3", node=OTHER_NODE),
               gnp("tiers", ingress=[{"action": "Allow", "source": {"selector": "tier == 'a'"}},
                                     {"action": "Allow", "source": {"selector": "tier == 'b'"}}],
                   egress=[{"action": "Deny", "destination": {"notSelector": "has(net2)"}}])]),
    ("profile relabels", [profile("net1", labels={"net1": "", "tier": "b"})]),
    ("remote readdressed", [wep("r", "10.0.0.30", node=OTHER_NODE)]),
    ("remote relabelled", [wep("r", "10.0.0.30", node=OTHER_NODE, labels={"tier": "a"})]),
    ("local relabelled", [wep("a", "10.0.0.1", labels={"role": "db"})]),
    ("new selector", [gnp("db", ingress=[{"action": "Allow",
                                          "source": {"selector": "role == 'db'"}}])]),
    ("local added", [wep("c", "10.0.0.5", labels={"role": "db"})]),
    ("local moved to another node", [wep("b", "10.0.0.2", node=OTHER_NODE,
                                         profiles=("net2",))]),
    ("local's profiles changed", [wep("c", "10.0.0.5", labels={"role": "db"},
                                      profiles=("net2",))]),
    ("a policy's rules changed", [gnp("db", ingress=[
        {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'db'"},
         "destination": {"ports": [80, "8000:8080"]}}])]),
    ("a policy's order changed", [gnp("db", order=5, ingress=[
        {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'db'"},
         "destination": {"ports": [80, "8000:8080"]}}])]),
    ("a profile's rules changed", [profile("net2", ingress=[{"action": "Deny"}])]),
    ("local of a missing profile", [wep("d", "10.0.0.6", profiles=("net3", "net1"))]),
    ("the profile appears", [profile("net3", labels={"role": "db"})]),
    ("the profile is gone", [gone(profile("net3"))]),
    ("local and remote gone", [gone(wep("a")), gone(wep("r", node=OTHER_NODE))]),
    ("policies gone", [gone(gnp("tiers")), gone(gnp("db"))]),
]


def test_an_engine_that_follows_the_changes_programs_what_a_fresh_one_does(engine, tmp_path):
    done = []
    for name, batch in BATCHES:
        feed(engine, *batch)
        done += batch
        assert engine.nft.programmed == fresh(*done, status_path=str(tmp_path / "fresh")), name


@pytest.mark.parametrize("seed", range(12))
def test_random_endpoint_churn_programs_the_sets_a_fresh_engine_does(engine, tmp_path, seed,
                                                                      monkeypatch):
    """Sets changed by what their selectors gained and lost, batch after
    batch, end as sets made anew: endpoints coming, going, relabelled,
    readdressed and moved, sharing addresses; and the members each change
    sends to the kernel are the difference of the sets."""
    element_changes = nft.element_changes

    def checked(old, new):
        changes = element_changes(old, new)
        if changes is not None:
            held, now = {**old.sets, **old.maps}, {**new.sets, **new.maps}
            assert [(n, set(a), set(r)) for n, _, a, r in changes] == [
                (n, now[n][1] - held[n][1], held[n][1] - now[n][1])
                for n in now if now[n][1] != held[n][1]]
        return changes
    monkeypatch.setattr(nft, "element_changes", checked)
    rng = random.Random(seed)
    base = [*NETWORKS, gnp("db", ingress=[{"action": "Allow",
                                           "source": {"selector": "role == 'db'"}}])]
    feed(engine, *base)
    live = {}
    for step in range(25):
        batch = []
        for _ in range(rng.randint(1, 6)):
            name = f"e{rng.randrange(10)}"
            if name in live and rng.random() < 0.3:
                batch.append(gone(live.pop(name)))
                continue
            addresses = [f"10.0.1.{rng.randrange(6)}"] + (
                [f"fd00::1:{rng.randrange(6)}"] if rng.random() < 0.5 else [])
            record = wep(name, *addresses, node=rng.choice([NODE, OTHER_NODE]),
                         labels={"role": rng.choice(["db", "web"])},
                         profiles=(rng.choice(["net1", "net2"]),))
            if name in live and live[name][0] != record[0]:  # another node: another key
                batch.append(gone(live[name]))
            live[name] = record
            batch.append(record)
        feed(engine, *batch)
        expected = fresh(*base, *live.values(), status_path=str(tmp_path / "fresh"))
        assert engine.nft.programmed.sets == expected.sets, step


def test_a_change_of_the_rules_naming_a_guarded_destination_moves_the_guard(tmp_path):
    """The guard in the shared egress chains follows the rules of the
    policies and profiles they name, changed alone."""
    etcd = ["http://10.0.0.9:2379"]
    opens = {"action": "Allow", "protocol": "TCP",
             "destination": {"nets": ["10.0.0.9/32"], "ports": [2379]}}
    batches = [[profile("net1"), wep("a", "10.0.0.1"), wep("c", "10.0.0.5"),
                gnp("etcd", types=["Egress"], egress=[opens])],
               [gnp("etcd", types=["Egress"], egress=[{"action": "Pass"}])],
               [profile("net1", egress=[opens])],
               [profile("net1")]]
    engine = PolicyEngine(NODE, str(tmp_path / "engine"), etcd_endpoints=etcd)
    engine.nft.program = lambda desired: setattr(engine.nft, "programmed", desired)
    done, guarded = [], []
    for batch in batches:
        feed(engine, *batch)
        done += batch
        reference = PolicyEngine(NODE, str(tmp_path / "fresh"), etcd_endpoints=etcd)
        reference.nft.program = lambda desired: setattr(reference.nft, "programmed", desired)
        feed(reference, *done, snapshot=True)
        assert engine.nft.programmed == reference.nft.programmed
        egress = engine.nft.programmed.chains[engine._chains.egress[interface("a")]]
        guarded.append(any("10.0.0.9 . 2379" in rule for rule in egress))
    assert guarded == [False, True, False, True]


@pytest.mark.parametrize("batch", [
    [profile("net1", labels={"net1": "", "tier": "b"})],
    [wep("r", "10.0.0.30", node=OTHER_NODE)],
], ids=["profile relabels", "remote readdressed"])
def test_a_change_that_comes_with_a_new_selector_reaches_the_sets(engine, tmp_path, batch):
    start = BATCHES[0][1]
    feed(engine, *start)
    with_selector = [*batch, gnp("db", ingress=[{"action": "Allow",
                                                 "source": {"selector": "role == 'db'"}}])]
    feed(engine, *with_selector)
    assert engine.nft.programmed == fresh(*start, *with_selector,
                                          status_path=str(tmp_path / "fresh"))


def test_a_stale_record_on_the_same_interface_leaves_it_to_the_other(engine, tmp_path):
    """Two local records naming one interface (a stale one beside its
    successor): when one goes, the interface keeps the other's chains."""
    stale_key, stale = wep("y", "10.0.0.8", profiles=("net2",))
    record = json.loads(stale)
    record["spec"]["interfaceName"] = interface("a")
    stale = (stale_key, json.dumps(record).encode())
    feed(engine, *NETWORKS, stale)
    feed(engine, gone(stale))
    assert engine.nft.programmed == fresh(*NETWORKS, status_path=str(tmp_path / "fresh"))
    feed(engine, stale)
    feed(engine, gone(wep("a")))
    assert engine.nft.programmed == fresh(*NETWORKS, stale, gone(wep("a")),
                                          status_path=str(tmp_path / "fresh"))
