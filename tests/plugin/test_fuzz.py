"""Property-based fuzzing of every plugin call through Flask's test client,
against the session's real etcd.

For every call in plugin.calls.CALLS (and Plugin.Activate, unknown paths and
wrong methods) hypothesis posts generated bodies: arbitrary bytes, arbitrary
JSON, objects with the call's own field names holding wrong-typed or hostile
values, deep nesting, raw number tokens and oversize bodies (413 on every
path and method).  Every answer must be a JSON object; an answer with "Err"
must be a 400/404/405/413/500 that the body explains (invalid per the call's
schema, unknown call, too large), never an "internal error", and must have
written nothing to etcd.  The expected status is stated by this module's own
rules (expectation()), not by the app's parser.
A body the schema accepts may succeed (200: whatever it wrote must be strict
JSON, which Calico's Go readers parse) or be refused by the domain (500).
No request may log a traceback, and none may reach netlink: the dataplane is
replaced by recorders here (Join and Leave would otherwise make or delete
veths in the namespace pytest runs in).

The run is derandomized (the same examples every run, no example database);
CALICO_FUZZ_EXAMPLES=500 CALICO_FUZZ_RANDOM=1 explores further locally.
"""

import json
import math
import os
import re
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from driver import dataplane
from plugin.app import CONTENT_TYPE, MAX_BODY, MAX_ERR
from plugin.calls import CALLS
from plugin.schemas import BadRequest, docker_id
from tests.plugin.support import EP, NET, all_keys, make_client

pytestmark = pytest.mark.filterwarnings(  # hypothesis on our 1 MiB bodies
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")
FUZZ = settings(
    max_examples=int(os.environ.get("CALICO_FUZZ_EXAMPLES", "60")),
    deadline=None,
    database=None,
    derandomize=not os.environ.get("CALICO_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)
KNOWN = sorted(CALLS)
ACTIVATE = "Plugin.Activate"
VALID = "valid"  # the expectation for a body the call's schema accepts


# -- generated values -------------------------------------------------------

def _repeated(pieces, counts):
    """Long strings, cheaply: one of `pieces` times one of `counts`."""
    return st.builds(lambda piece, n: piece * n, st.sampled_from(pieces), st.sampled_from(counts))


HEX = "0123456789abcdef"
IDS = [NET, EP, HEX * 4, "0123456789abcdefghijklmno"]  # Docker ids; the last a swarm id
HOSTILE_STRINGS = st.one_of(
    st.sampled_from([
        "", " ", "../../etc", "../" * 30 + "etc/passwd", "/calico/", "\x00", "a\x00b",
        "a" * 63, "a" * 65, NET.upper(), (HEX * 4).upper(), "g" * 64, NET + "\n", "\n" + NET,
        NET[:-1] + "\u0430", NET + "\x00", "0" * 25, "A" * 25, "%2e%2e%2f",
        "${jndi:ldap://x}", "'; DROP TABLE x; --", "\u202e\u0000\ufeff", "\ud800", "\udfff",
        "-1", "1e999", "NaN", "true", "null", "{}", "[]",
        "0.0.0.0/0", "::/0", "256.0.0.1", "10.0.0.0/33", "fe80::1%eth0", "1.2.3.4/24",
        "::ffff:1.2.3.4", "0x7f.1", "ee:ee:ee:ee:ee:ee", "EE-EE-EE-EE-EE-EE",
        "CalicoPoolIPv4", "CalicoPoolIPv6", "default-ipv4-ippool", "default-ipv4-ippool/..",
    ]),
    _repeated(["a", "\u00e9", "\U0001f600", "/", "\x00", "\ud800", "0"],
              [4095, 4096, 4097, 10_000, 100_000]),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "L", "N", "P", "So"]), max_size=40),
)

# json.dumps writes NaN and Infinity as such (not JSON), and 1e308 * 10 as Infinity.
SPECIAL_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324])
SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10 ** 300), max_value=10 ** 300),
    st.floats(allow_nan=True, allow_infinity=True), SPECIAL_FLOATS,
    HOSTILE_STRINGS,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(HOSTILE_STRINGS, st.text(max_size=8)), inner, max_size=5)),
    max_leaves=20,
)


def nested(depth, leaf="1", kind="list"):
    if kind == "list":
        return "[" * depth + leaf + "]" * depth
    return '{"a":' * depth + leaf + "}" * depth


DEPTHS = st.one_of(st.integers(1, 50), st.integers(900, 1100), st.integers(4_000, 6_000))

# Docker's real option names, to hide hostile values where the code looks.
OPTION_KEYS = ["com.docker.network.enable_ipv6", "com.docker.network.enable_ipv4",
               "com.docker.network.generic", "com.docker.network.internal",
               "com.docker.network.gateway", "com.docker.network.endpoint.name",
               "RequestAddressType", "com.docker.network.endpoint.exposedports",
               "com.docker.network.portmap"]


def option_maps(values):
    return st.dictionaries(st.one_of(st.sampled_from(OPTION_KEYS), HOSTILE_STRINGS),
                           values, max_size=4)


def ipam_data(address):
    return st.fixed_dictionaries({}, optional={
        "AddressSpace": st.one_of(st.sampled_from(["CalicoLocalAddressSpace",
                                                   "CalicoGlobalAddressSpace", "LocalDefault"]),
                                  JSON_VALUES),
        "Pool": address, "Gateway": address,
        "AuxAddresses": st.one_of(option_maps(st.one_of(address, JSON_VALUES)), JSON_VALUES),
    })


CIDRS = st.sampled_from(["", "0.0.0.0/0", "::/0", "192.168.0.0/16", "192.168.7.3/32",
                         "fd00::5/128", "10.0.0.0/8", "fd00::/112"])
ADDRESSES = st.sampled_from(["", "192.168.0.5", "192.168.255.255", "10.1.2.3", "fd00::5",
                             "::", "0.0.0.0", "255.255.255.255"])
MACS = st.sampled_from(["", "00:22:33:44:55:66", "EE-EE-EE-EE-EE-EE"])


def _value(valid):
    """A field's value: mostly plausible (so some bodies pass the schema and
    reach the domain code), else hostile, arbitrary or deeply nested."""
    return st.one_of(valid, valid, HOSTILE_STRINGS, JSON_VALUES,
                     DEPTHS.map(lambda d: json.loads(nested(min(d, 500)))))


OPTIONS = st.one_of(
    st.just({}),
    option_maps(st.one_of(st.booleans(), st.text(max_size=10), option_maps(st.just("")))),
    option_maps(JSON_VALUES))
OPTION_VALUES = st.one_of(st.booleans(), SPECIAL_FLOATS, SCALARS, OPTIONS)
FIELD_VALUES = {
    "NetworkID": st.sampled_from(IDS),
    "EndpointID": st.sampled_from(IDS),
    "Options": OPTIONS,
    "IPv4Data": st.lists(ipam_data(_value(CIDRS)), max_size=3),
    "IPv6Data": st.lists(ipam_data(_value(CIDRS)), max_size=2),
    "Interface": st.fixed_dictionaries({}, optional={
        "Address": _value(CIDRS), "AddressIPv6": _value(CIDRS), "MacAddress": _value(MACS)}),
    "SandboxKey": st.sampled_from(["", "/var/run/docker/netns/1234abcd", "/x"]),
    "DiscoveryType": st.sampled_from([0, 1, 2]),
    "DiscoveryData": st.one_of(st.just({}), option_maps(JSON_VALUES)),
    "AddressSpace": st.sampled_from(["", "CalicoLocalAddressSpace", "CalicoGlobalAddressSpace"]),
    "Pool": CIDRS, "SubPool": CIDRS,
    "V6": st.booleans(),
    "PoolID": st.sampled_from(["CalicoPoolIPv4", "CalicoPoolIPv6", "default-ipv4-ippool",
                               "default-ipv6-ippool", "no-such-pool"]),
    "Address": st.one_of(ADDRESSES, CIDRS),
}
ALL_FIELDS = sorted(FIELD_VALUES)
# Fields inside Interface, IPv4Data[i] and IPv6Data[i].
NESTED_VALUES = {"Gateway": CIDRS, "AddressIPv6": CIDRS, "MacAddress": MACS,
                 "AuxAddresses": option_maps(CIDRS)}

_IPV4_DATA = {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "0.0.0.0/0",
              "Gateway": "0.0.0.0/0", "AuxAddresses": {}}
_IPV6_DATA = {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "::/0", "Gateway": "::/0",
              "AuxAddresses": {}}
_IDS = {"NetworkID": NET, "EndpointID": EP}
_NETWORK = {"NetworkID": NET, "Options": {"com.docker.network.enable_ipv6": True,
                                          "com.docker.network.generic": {}},
            "IPv4Data": [_IPV4_DATA], "IPv6Data": [_IPV6_DATA]}
_DISCOVERY = {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.1", "Self": True}}
# A body Docker would send for each call, to mutate into hostile valid ones.
VALID_BODIES = {
    "NetworkDriver.GetCapabilities": {},
    "NetworkDriver.CreateNetwork": _NETWORK,
    "NetworkDriver.GwAllocCheck": {"Options": {"com.docker.network.enable_ipv4": True}},
    "NetworkDriver.DeleteNetwork": {"NetworkID": NET},
    "NetworkDriver.AllocateNetwork": _NETWORK,
    "NetworkDriver.FreeNetwork": {"NetworkID": NET},
    "NetworkDriver.CreateEndpoint": {**_IDS, "Options": {}, "Interface": {
        "Address": "192.168.7.3/32", "AddressIPv6": "fd00::5/128", "MacAddress": ""}},
    "NetworkDriver.EndpointOperInfo": _IDS,
    "NetworkDriver.DeleteEndpoint": _IDS,
    "NetworkDriver.Join": {**_IDS, "SandboxKey": "/var/run/docker/netns/1234abcd",
                           "Options": {}},
    "NetworkDriver.Leave": _IDS,
    "NetworkDriver.DiscoverNew": _DISCOVERY,
    "NetworkDriver.DiscoverDelete": _DISCOVERY,
    "NetworkDriver.ProgramExternalConnectivity": {**_IDS, "Options": {}},
    "NetworkDriver.RevokeExternalConnectivity": _IDS,
    "IpamDriver.GetCapabilities": {},
    "IpamDriver.GetDefaultAddressSpaces": {},
    "IpamDriver.RequestPool": {"AddressSpace": "CalicoLocalAddressSpace", "Pool": "",
                               "SubPool": "", "Options": {}, "V6": False},
    "IpamDriver.ReleasePool": {"PoolID": "CalicoPoolIPv4"},
    "IpamDriver.RequestAddress": {"PoolID": "CalicoPoolIPv4", "Address": "",
                                  "Options": {"RequestAddressType": ""}},
    "IpamDriver.ReleaseAddress": {"PoolID": "CalicoPoolIPv4", "Address": "192.168.0.5"},
}


def _places(body):
    """(object, key) for every field of every object in body, and for one new key."""
    places, todo = [], [body]
    while todo:
        value = todo.pop()
        if isinstance(value, dict):
            places += [(value, key) for key in value] + [(value, None)]
            todo += value.values()
        elif isinstance(value, list):
            todo += value
    return places


@st.composite
def near_valid(draw, path):
    """Docker's body for the call with one to three fields changed: to another
    plausible value, a hostile or wrong-typed one, or removed; or a field added."""
    body = json.loads(json.dumps(VALID_BODIES.get(path, {})))
    for _ in range(draw(st.integers(1, 3))):
        target, key = draw(st.sampled_from(_places(body)))
        if key is None:
            key = draw(st.one_of(st.sampled_from(ALL_FIELDS + OPTION_KEYS), HOSTILE_STRINGS))
        if key in target and draw(st.integers(0, 4)) == 0:
            del target[key]
            continue
        plausible = FIELD_VALUES.get(key, NESTED_VALUES.get(key, OPTION_VALUES))
        # A copy: hypothesis may hand out the same object again (st.just({})).
        target[key] = json.loads(json.dumps(draw(_value(plausible))))
    return body


def field_objects(path):
    """JSON objects with the call's own field names (others for Activate and
    unknown calls), each present or not, plausible or hostile."""
    names = list(CALLS[path].schema.params) if path in CALLS else ALL_FIELDS
    optional = {name: _value(FIELD_VALUES[name]) for name in names}
    return st.fixed_dictionaries({}, optional=optional).flatmap(
        lambda body: st.dictionaries(HOSTILE_STRINGS, JSON_VALUES, max_size=2).map(
            lambda extra: {**extra, **body}))


def encode(value, how):
    """A JSON value as bytes: NaN/Infinity as JSON text, lone surrogates
    escaped (ascii) or passed through as invalid UTF-8, or UTF-16."""
    if how == "ascii":
        return json.dumps(value).encode()
    text = json.dumps(value, ensure_ascii=False)
    if how == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    return text.encode("utf-8", "surrogatepass")


ENCODINGS = st.sampled_from(["ascii", "ascii", "utf-8", "utf-16"])
RAW_TOKENS = st.one_of(
    st.sampled_from([b"NaN", b"-Infinity", b"Infinity", b"1e999", b"-1e999", b"-0", b"1.5e-400",
                     b"0x10", b"01", b"1_000", b"nul", b"\"\\ud800\"", b"\"\\u0000\"",
                     b"\"\\uZZZZ\"", b"\"a", b"9" * 4300, b"9" * 4301, b"-" + b"1" * 5000,
                     b"0." + b"1" * 5000]),
    st.integers(1, 6000).map(lambda n: b"1" * n))


def _field_names(path):
    route = CALLS.get(path)
    return list(route.schema.params) if route and route.schema.params else ["NetworkID"]


def raw_field_bodies(path):
    """An object with the call's field names whose values are raw JSON tokens
    no generator produces (huge numbers, bad escapes)."""
    return st.builds(lambda name, token: b'{"%s": %s}' % (name.encode(), token),
                     st.sampled_from(_field_names(path)), RAW_TOKENS)


def deep_bodies(path):
    """Deep nesting, at the top or under one of the call's fields."""

    def build(depth, kind, where, close):
        inner = nested(depth, kind=kind)
        if not close:  # unbalanced: the brackets never close
            inner = inner[: len(inner) // 2 + 1]
        if where is None:
            return inner.encode()
        ids = json.dumps({"NetworkID": NET, "EndpointID": EP})[:-1]
        return f'{ids}, "{where}": {inner}}}'.encode()

    return st.builds(build, DEPTHS, st.sampled_from(["list", "dict"]),
                     st.one_of(st.none(), st.sampled_from(_field_names(path))), st.booleans())


OVERSIZE = st.builds(lambda piece, extra: piece * ((MAX_BODY + extra) // len(piece) + 1),
                     st.sampled_from([b" ", b"x", b"[", b'{"NetworkID": "']),
                     st.sampled_from([1, 100, 3 * MAX_BODY]))
AT_LIMIT = st.builds(lambda pad: json.dumps({"NetworkID": NET, "pad": "x" * pad}).encode(),
                     st.sampled_from([MAX_BODY - 100, MAX_BODY - 10]))


def bodies(path):
    return st.one_of(
        st.builds(encode, near_valid(path), ENCODINGS),
        st.builds(encode, near_valid(path), ENCODINGS),
        st.builds(encode, near_valid(path), ENCODINGS),
        st.binary(max_size=200),
        st.builds(encode, JSON_VALUES, ENCODINGS),
        st.builds(encode, field_objects(path), ENCODINGS),
        st.builds(encode, field_objects(path), ENCODINGS),
        raw_field_bodies(path),
        deep_bodies(path),
        OVERSIZE, AT_LIMIT,
    )


# -- what the answer must be ------------------------------------------------

def levels(value):
    """A JSON value's values level by level, the value itself first."""
    level = [value]
    while level:
        yield level
        level = [v for x in level if isinstance(x, list | dict)
                 for v in (x.values() if isinstance(x, dict) else x)]


def depth_of(value):
    return sum(1 for _ in levels(value))


def _strict(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(raw):
    """The body as JSON, or ValueError when it is not strict JSON: this
    test's own statement of what the plugin must refuse, apart from the app's
    parser (plugin.app.parse_body): what the standard decoder reads, without
    NaN and Infinity, every number a finite float."""
    value = json.loads(raw, parse_constant=_strict)
    if any(isinstance(x, float) and not math.isfinite(x) for level in levels(value) for x in level):
        raise ValueError("a number beyond a float's range")
    return value


def expectation(path, raw, method="POST"):
    """(status or VALID, the parsed body or None)."""
    if len(raw) > MAX_BODY:  # on every path and method
        return 413, None
    if method != "POST":
        return 405, None
    if path == ACTIVATE:
        return 200, None
    route = CALLS.get(path)
    if route is None:
        return 404, None
    if not raw.strip():
        body = None  # Docker's empty body: no arguments
    else:
        try:
            body = strict_json(raw)
        except (ValueError, RecursionError):
            return 400, None
    try:
        route.schema(body)
    except BadRequest:
        return 400, body
    return VALID, body


def assert_strict_json_since(store, revision):
    """Whatever a call wrote is strict JSON (Calico's Go readers parse it)."""
    kvs, _ = store.get_prefix("/calico/")
    for kv in kvs:
        if kv.mod_revision > revision:
            json.loads(kv.value, parse_constant=_strict)


class Netlink:
    """Stands in for driver.dataplane's kernel calls and records them."""

    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("set_up_veth", "remove_veth", "remove_routes", "link_exists", "links"):
            monkeypatch.setattr(dataplane, name, self._recorder(name))

    def _recorder(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args))
            return [] if name == "links" else 1
        return record

    def made_links(self):
        return [c for c in self.calls if c[0] == "set_up_veth"]


@pytest.fixture
def fuzz(store, make_pool, caplog, monkeypatch):
    """check(path, raw, method="POST"): post raw, assert the answer's rules."""
    netlink = Netlink(monkeypatch)
    make_pool("default-ipv4-ippool", "192.168.0.0/16")
    make_pool("default-ipv6-ippool", "fd00::/112")
    client = make_client(store)

    def check(path, raw, method="POST", url=None):
        expected, body = expectation(path, raw, method)
        keys, revision = all_keys(store), store.revision()
        logged = len(caplog.records)
        resp = client.open(url or "/" + path, method=method, data=raw)
        if currently_in_test_context():  # --hypothesis-show-statistics shows these
            event(f"{expected} -> {resp.status_code}")
        answer = json.loads(resp.data)
        assert isinstance(answer, dict), answer
        assert resp.content_type == CONTENT_TYPE
        tracebacks = [r for r in caplog.records[logged:] if r.exc_info or r.exc_text]
        assert not tracebacks, tracebacks[0].getMessage()
        assert not netlink.made_links(), f"{path} reached netlink: {netlink.made_links()}"
        if resp.status_code == 200:
            assert expected in (200, VALID), (resp.status_code, answer, expected)
            assert "Err" not in answer
            assert_strict_json_since(store, revision)
            return resp.status_code, answer
        err = answer.get("Err")
        assert isinstance(err, str) and err, answer
        assert "internal error" not in err and "Traceback" not in err, err
        assert len(err) <= MAX_ERR, f"{len(err)} characters: {err[:200]}..."  # app.py cuts
        assert store.revision() == revision, (
            f"{path} answered {err!r} but wrote to etcd: {sorted(all_keys(store) ^ keys)}")
        assert all_keys(store) == keys
        if expected == VALID:  # refused by the domain, not the schema
            assert resp.status_code == 500, (resp.status_code, err)
        elif resp.status_code == 400 and "nested too deeply" in err and expected in (400, VALID):
            # The app parses deeper in the stack than this test does.
            assert body is None or depth_of(body) > 900, err
        else:
            assert resp.status_code == expected, (resp.status_code, err)
        return resp.status_code, answer

    return check


# -- the properties ---------------------------------------------------------

def test_every_call_has_a_valid_body_to_mutate():
    assert sorted(VALID_BODIES) == KNOWN
    for path, body in VALID_BODIES.items():
        assert expectation(path, json.dumps(body).encode())[0] == VALID, path


@pytest.mark.parametrize("path", [ACTIVATE, *KNOWN])
@FUZZ
@given(data=st.data())
def test_every_call_answers_any_body_with_json(fuzz, path, data):
    fuzz(path, data.draw(bodies(path), label="body"))


CALL_NAMES = st.one_of(
    st.text(string.ascii_letters + string.digits + "._-/%", max_size=40),
    st.text(max_size=20),
    st.sampled_from([c.lower() for c in KNOWN] + [c + "/" for c in KNOWN]
                    + ["", "Plugin.Activate/", "NetworkDriver.", "IpamDriver", "..", "."]),
# Werkzeug merges a leading "//" into "/": "%2FPlugin.Activate" is Activate.
).filter(lambda name: name.lstrip("/") not in CALLS and name.lstrip("/") != ACTIVATE)


ODD_BODIES = st.one_of(st.binary(max_size=50), OVERSIZE)


@FUZZ
@given(name=CALL_NAMES, raw=st.one_of(ODD_BODIES, field_objects("?").map(
    lambda body: json.dumps(body).encode())))
def test_unknown_calls_are_a_json_404(fuzz, name, raw):
    status, _ = fuzz(name, raw, url="/" + quote(name, safe=""))
    assert status == (413 if len(raw) > MAX_BODY else 404)


@FUZZ
@given(path=st.sampled_from([ACTIVATE, *KNOWN]),
       method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]), raw=ODD_BODIES)
def test_other_methods_are_a_json_405(fuzz, path, method, raw):
    status, _ = fuzz(path, raw, method=method)
    assert status == (413 if len(raw) > MAX_BODY else 405)


# -- bugs the fuzzer found (fixed): an id with a trailing newline passed the
# schema and reached etcd keys; CreateEndpoint without Interface raised KeyError.

# Every id the schema lets through must be one Docker could send: it ends
# up in etcd keys and interface names.
_DOCKER_ID = re.compile(r"[0-9a-f]{64}|[0-9a-z]{25}")


@FUZZ
@given(value=st.one_of(HOSTILE_STRINGS, st.sampled_from(IDS).flatmap(
    lambda i: st.sampled_from([i + "\n", i + "\r\n", i + " ", "\n" + i]))))
def test_an_accepted_id_is_a_docker_id(value):
    try:
        docker_id(value, "NetworkID")
    except BadRequest:
        return
    assert _DOCKER_ID.fullmatch(value), f"accepted {value!r} as a Docker id"


@pytest.mark.parametrize("field", ["NetworkID", "EndpointID"])
def test_an_id_with_a_trailing_newline_is_refused(fuzz, field):
    body = {**VALID_BODIES["NetworkDriver.CreateEndpoint"], field: NET + "\n"}
    status, answer = fuzz("NetworkDriver.CreateEndpoint", json.dumps(body).encode())
    assert status == 400, answer


@pytest.mark.parametrize("interface", [{}, {"Interface": None}])
def test_create_endpoint_without_interface_is_answered(fuzz, interface):
    body = {**_IDS, "Options": {}, **interface}
    fuzz("NetworkDriver.CreateEndpoint", json.dumps(body).encode())
