"""agent/nft_expressions.py against nft itself, in a namespace of its own:
each rule it encodes is, in the kernel, byte for byte the rule nft writes
from the same text, and each set of the rule's own the set nft makes
(both read back with dumps of the chain and sets), so a chain
refilled over nfnetlink enforces what the script would have.  Forms nft
would write otherwise than word for word are left to nft."""

import re
import socket
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import netns as pyroute2_netns

from agent import nftables
from agent.nft_expressions import encode
from kernel.wire import attribute, encode_message
from tests.lab import Lab

pytestmark = pytest.mark.require_root

TABLE = "calico-nft-expr"
T = f"inet {TABLE}"
_GETRULE, _GETSET, _GETSETELEM, _DUMP, _REQUEST = 7, 10, 13, 0x300, 0x1

# Every form the encoder takes, as our compiler writes them.
ENCODED = [
    "meta nfproto ipv4 meta l4proto 6 ip saddr @s4 th dport 20003 "
    "meta mark set meta mark | 0x10000 return",
    "meta nfproto ipv4 meta l4proto 6 ip saddr != @s4 th dport 9000-9100 drop",
    "meta nfproto ipv6 meta l4proto != 17 ip6 daddr @s6 th sport != 9000-9100 accept",
    "meta nfproto ipv4 ip saddr 10.0.0.1 th dport != 80 accept",
    "meta nfproto ipv4 ip daddr 10.0.0.0/8 drop",
    "meta nfproto ipv4 ip saddr != 10.16.0.0/12 drop",
    "meta nfproto ipv4 ip daddr != 10.1.0.0/16 drop",
    "meta nfproto ipv6 ip6 saddr fd00::/64 ip6 daddr != fd00:1::/60 drop",
    "meta nfproto ipv6 ip6 saddr fd00::1 drop",
    "meta nfproto ipv4 meta l4proto 1 icmp type 8 accept",
    "meta nfproto ipv4 meta l4proto 1 icmp type != 8 accept",
    "meta nfproto ipv4 meta l4proto 1 icmp type 3 icmp code 1 drop",
    "meta nfproto ipv6 meta l4proto 58 icmpv6 type 1 icmpv6 code 4 drop",
    "meta nfproto ipv6 meta l4proto 58 icmpv6 type 128 drop",
    'meta nfproto ipv4 ip saddr @s4 log prefix "calico-packet: " level notice',
    "meta nfproto ipv6 meta mark set meta mark | 0x20000 return",
    "meta mark & 0x20000 == 0 jump target",
    "meta mark & 0x10000 == 0x10000 return",
    "ct mark & 0x4000000 == 0x4000000 meta mark set meta mark | 0x10000 return",
    "ct state established,related accept",
    "ct state invalid drop",
    "goto target",
    "drop",
    "meta nfproto ipv4 meta l4proto 6 th dport { 80, 443 } accept",  # sets of the rule's own
    "meta nfproto ipv4 meta l4proto 17 th sport != { 1, 5 } th dport { 53, 54, 55 } drop",
    "meta nfproto ipv4 ip saddr { 10.0.0.1, 10.0.0.9 } ip daddr != { 10.0.0.2, 10.0.0.3 } drop",
    "meta nfproto ipv6 ip6 saddr != { fd00::1, fd00::2 } ip6 daddr { fd00::3, fd00::4 } drop",
    # a value alone negated, as compiler.py writes it: never joined by nft
    "meta nfproto ipv4 meta l4proto 17 th sport != 22-22 th dport != 23-23 drop",
    "meta nfproto ipv4 ip saddr != 10.0.0.1-10.0.0.1 ip daddr != 10.0.0.2-10.0.0.2 drop",
    "meta nfproto ipv6 ip6 saddr != fd00::1-fd00::1 drop",
]
# Forms nft writes otherwise than word for word, and forms we do not take.
LEFT_TO_NFT = [
    # fields side by side, which nft may load as one (it does ports and ICMP's)
    "meta nfproto ipv4 ip saddr 10.0.0.1 ip daddr 10.0.0.2 accept",
    "meta nfproto ipv4 meta l4proto 6 th sport 1 th dport 2 accept",
    "meta nfproto ipv4 meta l4proto 17 th sport != 22 th dport != 23 drop",
    "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0 icmp type != 3 drop",
    "meta nfproto ipv4 ip saddr 10.0.0.1-10.0.0.9 drop",  # a range of addresses, not negated
    "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code != 0 accept",
    "meta nfproto ipv4 meta l4proto 1 icmp type . icmp code != { 8 . 0 } accept",
    "meta nfproto ipv4 ip saddr 10.0.0.1 ip daddr 10.0.0.0/8 accept",  # a prefix beside
    "meta nfproto ipv4 icmp type 8 accept",  # nft adds meta l4proto icmp
    "udp dport 4789 drop",  # and meta l4proto udp
    "meta l4proto tcp accept",
    "ip saddr 10.0.0.1 drop",  # no family matched first
    "meta mark set meta mark & 0xfffcffff",
    "meta nfproto ipv4 ip saddr { 10.0.0.0/8, 10.0.0.9 } drop",  # an interval set
    "meta nfproto ipv4 th dport { 80 } drop",  # a set of one
    "meta nfproto ipv4 th dport { 80, 80 } drop",
    "meta nfproto ipv6 meta l4proto 58 icmpv6 type { 130, 131 } accept",
    "meta l4proto { tcp, udp } accept",
    "meta nfproto ipv4 ip saddr 0.0.0.0/0 drop",
    "drop accept",
    "ct mark & 0x4 == 0x4 notrack",
    # and what nft itself would refuse
    "", "jump", "th dport 9-5 drop", "meta l4proto 256 drop", "meta mark & zz == 1 drop",
    "meta mark & 0x1 == 0x100000000 drop", "meta nfproto ipv4 ip saddr ::1 drop",
    'log prefix "a" level notice drop',
    " ".join(f"th dport != {p}-{p}" for p in range(1, 2000)) + " drop",  # over 64 KiB
]


@pytest.fixture
def inside():
    with Lab() as lab:
        ns = lab.netns("nft-expr")
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as thread:
            yield lambda fn, *args: thread.submit(fn, *args).result()


def _messages(request: int, table: str, **names) -> list[list[tuple[int, bytes]]]:
    """A dump's messages, each as its attributes (number, payload)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    with sock:
        sock.bind((0, 0))
        body = struct.pack("=BBH", 1, 0, 0) + attribute(1, table.encode() + b"\0") + b"".join(
            attribute(number, name.encode() + b"\0") for number, name in names.values())
        sock.send(encode_message(10 << 8 | request, _REQUEST | _DUMP, 1, body))
        found = []
        while True:
            data = memoryview(sock.recv(1 << 20))
            while data:
                length, kind = struct.unpack_from("=IH", data)
                if kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                    return found
                found.append(_attributes(bytes(data[20:length])))
                data = data[(length + 3) & ~3:]


def _attributes(data: bytes) -> list[tuple[int, bytes]]:
    found = []
    while len(data) >= 4:
        size, number = struct.unpack_from("=HH", data)
        found.append((number & 0x3FFF, data[4:size]))
        data = data[(size + 3) & ~3:]
    return found


def dump(chain: str, table: str = TABLE) -> list[list]:
    """The expressions of each rule of the chain, as the kernel lists them;
    a set of the rule's own (which the kernel names __set<n>) by its
    attributes and elements instead of its name."""
    rules = []
    for message in _messages(_GETRULE, table, chain=(2, chain)):
        expressions = dict(message)[4]  # NFTA_RULE_EXPRESSIONS
        rule = []
        for _, expression in _attributes(expressions):
            name, data = dict(_attributes(expression))[1], dict(_attributes(expression)).get(2)
            own = [v for n, v in _attributes(data or b"") if n == 1 and v.startswith(b"__set")]
            if name.startswith(b"lookup") and own:
                data = ([(n, v) for n, v in _attributes(data) if n != 1],
                        anonymous_set(table, own[0].rstrip(b"\0")))
            rule.append((name, data))
        rules.append(rule)
    return rules


def anonymous_set(table: str, name: bytes) -> tuple:
    """A set's attributes but its name and handle, and its elements."""
    found, = [m for m in _messages(_GETSET, table) if dict(m)[2].rstrip(b"\0") == name]
    elements = sorted(e for m in _messages(_GETSETELEM, table, name=(2, name.decode()))
                      for n, v in m if n == 3 for e in _attributes(v))
    return [(n, v) for n, v in found if n not in (2, 16)], elements


def setup(inside):
    inside(nftables.run, f"add table {T}\nadd set {T} s4 {{ type ipv4_addr; }}\n"
                         f"add set {T} s6 {{ type ipv6_addr; }}\nadd chain {T} target\n"
                         f"add chain {T} by-nft\nadd chain {T} by-us\n")


def test_each_form_encoded_is_the_rule_nft_writes(inside):
    setup(inside)
    inside(nftables.run, "".join(f"add rule {T} by-nft {rule}\n" for rule in ENCODED))
    encoded = [encode(rule) for rule in ENCODED]
    assert None not in encoded, [r for r, e in zip(ENCODED, encoded) if e is None]
    inside(nftables.inet_rules, TABLE, [], {"by-us": encoded})
    ours, nft = inside(dump, "by-us"), inside(dump, "by-nft")
    assert len(ours) == len(nft) == len(ENCODED)
    for rule, mine, theirs in zip(ENCODED, ours, nft):
        assert mine == theirs, rule


def test_every_rule_the_compilers_tests_render_encodes_as_nft_writes_it(inside):
    """The matches test_policy_compiler.py expects of each kind of Calico
    rule, each ending in each of our actions: those that encode are, in
    the kernel, what nft writes."""
    from agent.policy.compiler import _ACTIONS
    from tests.agent.test_policy_compiler import RENDERED

    rules = [f"{matches} {action}".replace("  ", " ") for _, lines in RENDERED
             for matches in lines for action in _ACTIONS.values()]
    encoded = {rule: encode(rule) for rule in rules}
    taken = [rule for rule in rules if encoded[rule] is not None]
    assert len(taken) >= len(rules) // 2
    sets = sorted(set(re.findall(r"@(\S+)", " ".join(taken))))
    inside(nftables.run, f"add table {T}\nadd chain {T} by-nft\nadd chain {T} by-us\n" + "".join(
        f"add set {T} {name} {{ type {'ipv4_addr' if name.startswith('s4') else 'ipv6_addr'}; }}\n"
        for name in sets) + "".join(f"add rule {T} by-nft {rule}\n" for rule in taken))
    inside(nftables.inet_rules, TABLE, [], {"by-us": [encoded[rule] for rule in taken]})
    for rule, mine, theirs in zip(taken, inside(dump, "by-us"), inside(dump, "by-nft"),
                                  strict=True):
        assert mine == theirs, rule


def test_forms_nft_would_write_otherwise_are_left_to_it():
    assert [rule for rule in LEFT_TO_NFT if encode(rule) is not None] == []


def test_a_refill_replaces_the_chain_and_its_set_elements_in_one_transaction(inside):
    setup(inside)
    inside(nftables.run, f"add rule {T} by-us drop\nadd rule {T} by-us accept\n")
    rules = [encode("meta nfproto ipv4 ip saddr @s4 accept"), encode("drop")]
    inside(nftables.inet_rules, TABLE, [("s4", "ipv4_addr", frozenset({"10.0.0.1"}),
                                         frozenset())], {"by-us": rules})
    listed = inside(nftables.run, f"list chain {T} by-us\nlist set {T} s4\n")
    assert "ip saddr @s4 accept\n\t\tdrop\n" in listed and "accept\n\t\taccept" not in listed
    assert "10.0.0.1" in listed
    # A refusal (a chain that does not exist) applies nothing, elements
    # included, whether the message refused is the last, acked, or not.
    for chains in ({"by-us": [encode("drop")], "nowhere": [encode("drop")]},
                   {"nowhere": [encode("drop")], "by-us": [encode("drop")]}):
        with pytest.raises(nftables.KernelError, match="No such file or directory"):
            inside(nftables.inet_rules, TABLE, [("s4", "ipv4_addr", frozenset({"10.0.0.2"}),
                                                 frozenset())], chains)
        assert inside(nftables.run, f"list chain {T} by-us\nlist set {T} s4\n") == listed


def test_every_chain_our_compiler_writes_refills_as_nft_wrote_it(inside, tmp_path):
    """Policies using every kind of match a user writes, compiled and
    written by the engine's script; then each chain whose every rule
    encodes is refilled over nfnetlink: the kernel must hold the same
    bytes as before.  A policy's and a profile's chains are all
    refillable: those are the chains that change alone."""
    from agent.policy import nft
    from agent.policy.engine import PolicyEngine
    from tests.agent.test_policy_kernel import policy, profile, wep
    from tests.introspect import feed

    rules = [
        {"action": "Allow", "protocol": "TCP", "source": {"selector": "app == 'a'"},
         "destination": {"ports": [80, "9000:9100"]}},
        {"action": "Deny", "protocol": "UDP", "source": {"nets": ["10.1.0.0/16", "10.9.0.0/24"]},
         "destination": {"notPorts": ["1000:2000"], "ports": [53]}},
        {"action": "Log", "source": {"notNets": ["10.16.0.0/12"]}},
        {"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8},
         "destination": {"nets": ["10.2.0.7/32"]}},
        {"action": "Deny", "protocol": "ICMP", "notICMP": {"type": 3}},
        {"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128, "code": 0}},
        {"action": "Allow", "notProtocol": "TCP", "destination": {
            "notSelector": "role == 'db'", "notNets": ["fd00:1::/60"]}},
        {"action": "Deny", "protocol": 132, "source": {"ports": ["7:9"]}},
        {"action": "Pass", "protocol": "SCTP", "source": {"ports": [5000, 5001]}},
        {"action": "Allow", "destination": {"notNets": ["10.4.0.1/32", "10.4.0.2/32"]}},
    ]
    left_to_nft = [  # two addresses nft loads as one
        {"action": "Allow", "source": {"nets": ["10.3.0.1/32"]},
         "destination": {"nets": ["10.3.0.2/32"]}}]
    records = [profile("net1"), profile("net2"), wep("a", labels={"app": "a"}),
               wep("b", labels={"role": "db"}), wep("c"),
               policy("every", {"order": 1, "selector": "all()", "types": ["Ingress", "Egress"],
                                "ingress": rules, "egress": rules[::-1]}),
               policy("left", {"order": 2, "selector": "all()", "types": ["Ingress"],
                               "ingress": left_to_nft})]

    def write():
        engine = PolicyEngine("h1", str(tmp_path / "status.json"))
        for key, value in records:
            feed(engine, key, value)
        engine.batch_done(True, True)
        return engine.nft.programmed

    programmed = inside(write)
    before = {name: inside(dump, name, nft.TABLE) for name in programmed.chains}
    refill = {name: [encode(rule) for rule in rules]
              for name, rules in programmed.chains.items()}
    refill = {name: encoded for name, encoded in refill.items() if None not in encoded}
    assert {"pi-default.every", "po-default.every", "pri-net1", "pro-net1"} <= refill.keys()
    assert "pi-default.left" in programmed.chains and "pi-default.left" not in refill
    inside(nftables.inet_rules, nft.TABLE, [], refill)
    assert {name: inside(dump, name, nft.TABLE) for name in programmed.chains} == before



def test_a_value_alone_negated_on_each_side_is_tested_on_its_own(inside):
    """Deny UDP unless from port 22 or to port 23: a packet 22 -> 80 passes.
    nft 1.0 joins `th sport != 22 th dport != 23` into one test of both
    ports ((22, 80) is not (22, 23): dropped); the compiler writes ranges of
    one, which it keeps apart.  Written by nft, then refilled over
    nfnetlink: both enforce it."""
    from agent.policy.compiler import Chains, render_rule
    from datastore.policy import policy_from_resource
    from datastore.resources import Resource

    deny = {"action": "Deny", "protocol": "UDP", "source": {"notPorts": [22]},
            "destination": {"notPorts": [23]}}
    rule = policy_from_resource(Resource("GlobalNetworkPolicy", "default.r", spec={
        "selector": "all()", "egress": [deny]})).egress[0]
    rules = list(render_rule(Chains(), rule))
    inside(nftables.run, f"add table {T}\nadd chain {T} out "
                         f"{{ type filter hook output priority 0; }}\n"
                         + "".join(f"add rule {T} out {rule}\n" for rule in rules))

    def delivered(source_port: int, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            receiver.bind(("127.0.0.1", port))
            receiver.settimeout(0.3)
            sender.bind(("127.0.0.1", source_port))
            try:
                sender.sendto(b"x", ("127.0.0.1", port))  # EPERM: dropped on its way out
                return receiver.recv(1) == b"x"
            except (PermissionError, TimeoutError):
                return False

    def enforced():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        return [delivered(22, 80), delivered(24, 23), delivered(24, 80)]

    assert inside(enforced) == [True, True, False]
    inside(nftables.inet_rules, TABLE, [], {"out": [encode(rule) for rule in rules]})
    assert inside(enforced) == [True, True, False]


def test_large_refills_and_sets_go_whole(inside):
    """400 rules in one transaction (past the socket's default send
    buffer), and a set of 5,000 addresses (past what one attribute holds):
    the kernel holds what nft writes from the same text."""
    setup(inside)
    many = [f"meta nfproto ipv4 meta l4proto 6 ip saddr @s4 "
            f"ip daddr != 10.{i // 250}.{i % 250}.0/24 th dport {{ {i + 1}, {i + 2000} }} drop"
            for i in range(400)]
    big = "meta nfproto ipv4 ip saddr { " + ", ".join(
        f"10.1.{i // 250}.{i % 250}" for i in range(5000)) + " } accept"
    inside(nftables.run, "".join(f"add rule {T} by-nft {rule}\n" for rule in [*many, big]))
    inside(nftables.inet_rules, TABLE, [], {"by-us": [encode(rule) for rule in [*many, big]]})
    assert inside(dump, "by-us") == inside(dump, "by-nft")
