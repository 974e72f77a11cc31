"""The name index under random sequences of watch batches (and now and then
a new snapshot): after each batch its answers are those of a from-scratch
build over the endpoints it holds (a simple model of the rules below), a
table once published never changes, and a batch publishes at its end only.

The rules: a name's addresses are those of every endpoint of the network
claiming it, in the order the endpoints arrived (an update keeps an
endpoint's place, a deletion loses it), without repeats, IPv4 and IPv6
apart; an address's network is that of the last endpoint to arrive that
holds it."""

import json
import random

import pytest

from agent.names.index import NameIndex, NamedEndpoint
from datastore.records import WORKLOAD_ENDPOINTS, parse
from tests.introspect import feed

WEP_PREFIX = WORKLOAD_ENDPOINTS.prefix

KEYS = [f"{WEP_PREFIX}libnetwork/ep{i}" for i in range(10)]
NETWORKS = ["net1", "net2", "NET1"]  # NET1 is net1 (network names are lowercased)
NAMES = ["web", "db", "Web.", "db.net1", "workload-a", "x"]
ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1", "fd00::2"]
QUESTIONS = [q for name in NAMES + ["nosuch"] for q in
             (name, name.upper(), name + ".", *(f"{name}.{n}" for n in NETWORKS))]


def record(rng: random.Random) -> bytes | None:
    """A random value for an endpoint key: a deletion, an unreadable value,
    or a WorkloadEndpoint with some of the names, addresses and networks
    above (repeats and conflicts between endpoints likely)."""
    kind = rng.random()
    if kind < 0.15:
        return None
    if kind < 0.2:
        return b"{not json"
    notes, network = {}, rng.choice(NETWORKS)
    if rng.random() < 0.8:
        notes["libnetwork.projectcalico.org/network-name"] = network
    if rng.random() < 0.9:
        notes["libnetwork.projectcalico.org/dns-names"] = \
            "5" if rng.random() < 0.05 else json.dumps(rng.choices(NAMES, k=rng.randint(0, 3)))
    profiles = [] if rng.random() < 0.1 else [network]
    networks = [f"{a}/{128 if ':' in a else 32}"
                for a in rng.choices(ADDRESSES, k=rng.randint(0, 3))]
    return json.dumps({
        "kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
        "metadata": {"name": "ep", "namespace": "libnetwork", "annotations": notes},
        "spec": {"node": rng.choice(["h1", "h2"]), "ipNetworks": networks,
                 "profiles": profiles}}).encode()


def parsed(value: bytes | None) -> NamedEndpoint | None:
    wep = parse(WORKLOAD_ENDPOINTS, KEYS[0], value)
    return None if wep is None else NamedEndpoint.of(wep)


def model_answers(endpoints) -> tuple[dict, dict]:
    """What a table built from scratch over `endpoints` (in arrival order)
    answers to every question of QUESTIONS, and network_of every address."""
    names, networks_of = {}, {}
    for endpoint in endpoints:
        for address in endpoint.v4 + endpoint.v6:
            networks_of[address] = endpoint.network
        for name in endpoint.names:
            v4, v6 = names.setdefault((endpoint.network, name), ({}, {}))
            v4.update(dict.fromkeys(endpoint.v4))
            v6.update(dict.fromkeys(endpoint.v6))
    lookups = {}
    for network in {n.lower() for n in NETWORKS}:
        for question in QUESTIONS:
            q = question.lower().rstrip(".")
            found = names.get((network, q))
            if found is None and q.endswith("." + network):
                found = names.get((network, q[:-len(network) - 1]))
            lookups[network, question] = found and (tuple(found[0]), tuple(found[1]))
    return lookups, {a: networks_of.get(a) for a in ADDRESSES}


def table_answers(table) -> tuple[dict, dict]:
    lookups = {(network, question): table.lookup(network, question)
               for network in {n.lower() for n in NETWORKS} for question in QUESTIONS}
    return lookups, {a: table.network_of(a) for a in ADDRESSES}


def write(values: dict, key: str, value: bytes | None) -> None:
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value


def snapshot(index: NameIndex, values: dict) -> None:
    """A new snapshot, as the follower feeds it (etcd's key order)."""
    index.reset()
    for key in sorted(values):
        feed(index, key, values[key])
    index.batch_done(True, True)


@pytest.mark.parametrize("seed", range(8))
def test_incremental_answers_equal_a_rebuild(seed):
    rng = random.Random(seed)
    index = NameIndex()
    values = {}  # etcd's keys now
    arrived = {}  # key -> NamedEndpoint, in arrival order
    published = []  # (table, its answers) of earlier batches
    for _ in range(400):
        before = index.table
        changed = False
        for _ in range(rng.choice([1, 1, 1, 2, 5])):
            key = rng.choice(KEYS) if rng.random() < 0.95 else \
                "/calico/resources/v3/projectcalico.org/profiles/net1"
            value = record(rng)
            changed |= feed(index, key, value)
            if key.startswith(WEP_PREFIX):
                write(values, key, value)
                endpoint = parsed(value)
                if endpoint is None:
                    arrived.pop(key, None)
                else:
                    arrived[key] = endpoint
        assert index.table is before  # nothing shows before the batch's end
        index.batch_done(changed, False)
        if rng.random() < 0.05:  # the watch was lost, and the events below with it
            for _ in range(rng.randint(0, 4)):
                write(values, rng.choice(KEYS), record(rng))
            snapshot(index, values)
            arrived = {key: e for key in sorted(values) if (e := parsed(values[key]))}
        expected = model_answers(arrived.values())
        assert table_answers(index.table) == expected
        published.append((index.table, expected))
    for table, answered in published:  # a responder may still hold one
        assert table_answers(table) == answered
