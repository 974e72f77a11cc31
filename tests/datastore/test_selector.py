"""Calico selectors (datastore/selector.py) against the test tables of
libcalico-go (lib/selector/parser/parser_test.go, label_restriction_test.go,
tokenizer/tokenizer_test.go, lib/hash/unique_id_test.go), ported one entry per
entry, plus the language of calico-policy.md §3 and the IPPool nodeSelector
cases that ipam/ had before."""

import base64
import copy
import hashlib
import json
import pickle
import sys
import types
from pathlib import Path

import pytest

from datastore import selector
from datastore.selector import Selector, SelectorError, parse
from tests.introspect import label_keys, tokenize

# -- parser_test.go: selectorTests (selector, labels that match, labels that don't)

CALICO_EVALUATION = [
    ('a == "b"',
     [{"a": "b"}, {"a": "b", "c": "d"}],
     [{}, {"a": "c"}, {"c": "d"}]),
    ('a == "b" && c == "d"',
     [{"a": "b", "c": "d"}],
     [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}]),
    ('a == "b" || c == "d"',
     [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
     [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}]),
    ('a in {"\'", \'"\', "c"}',
     [{"a": "c"}, {"a": '"'}, {"a": "'"}],
     [{}, {"a": "e"}]),
    ('a not in {"\'", \'"\', "c"}',
     [{}, {"a": "e"}],
     [{"a": "c"}, {"a": '"'}, {"a": "'"}]),

    ("a == 'a'", [{"a": "a"}], []),
    ('a == "a"', [{"a": "a"}], []),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], []),
    ('a contains "a"',
     [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a starts with "a"',
     [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"',
     [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
     [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}]),
    ('a in {"a"}', [{"a": "a"}], []),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}], []),
    ('a in {"a", "b"}', [{"a": "b"}], []),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ("has(a)", [{"a": "b"}], []),
    ("!has(a)", [{"b": "b"}], []),
    ("", [{}], []),
    (" ", [{}], []),
    ("", [{"a": "b"}], []),
    ("all()", [{}], []),
    (" all()", [{}], []),
    (" all()", [{"a": "b"}], []),
    ("global()", [{}], []),
    (" global()", [{}], []),
    (" global()", [{"a": "b"}], []),

    ("a == 'a'", [], [{"a": "b"}]),
    ("a == 'a'", [], [{}]),
    ('a != "a"', [], [{"a": "a"}]),
    ("a != 'a'", [], [{"a": "a"}]),
    ('a in {"a"}', [], [{"a": "b"}]),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ('a in {"a", "b"}', [], [{"a": "c"}]),
    ("has(b)", [], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),

    # Boolean expressions...
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),

    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]

# -- parser_test.go: badSelectors

CALICO_REFUSED = [
    "b == b",          # label == label
    "b contains b",    # label contains label
    "b starts with b",  # label starts with label
    "b ends with b",   # label starts with label
    "'b1' == b",       # literal on lhs
    "b",               # bare label
    "a b",             # Garbage
    "!",               # Garbage
    'foo == "bar" &',  # Garbage
    'foo == "bar" |',  # Garbage
    "foo != ||",       # Garbage
    'foo in {"", ||',  # Garbage
    'foo in ""',       # Expect set literal
    '"FOO',            # Unterminated string
    "\"FOO'",          # Unterminated string
    '"FOO',            # Unterminated string
    "'FOO",            # Unterminated string
    "(",               # Unterminated paren
    '(a == "foo"',     # Unterminated paren
    ")",               # Unterminated paren
    "()",              # Unterminated paren
    "%",               # Unexpected char
    'a == "b" && %',   # Unexpected char
    'a == "b" || %',   # Unexpected char
    "a ",              # should be followed by operator
    "has(foo) &&",     # should be followed by operator
]

# -- parser_test.go: canonicalisationTests (input, canonical, UniqueID or None)

CALICO_CANONICAL = [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")',
     "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ('a == "\'"', 'a == "\'"', None),
    ("a == '\"'", "a == '\"'", None),
    ("a contains '\"'", "a contains '\"'", None),
    ('a contains "\'"', 'a contains "\'"', None),
    ("a startswith '\"'", "a starts with '\"'", None),
    ('a endswith "\'"', 'a ends with "\'"', None),
    ("a!='\"'", "a != '\"'", None),
    # Set items get sorted/de-duped.
    ('a in {"d"}', 'a in {"d"}', None),
    ('a in {"a", "b"}', 'a in {"a", "b"}', None),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', None),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}', None),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', None),
]

# -- parser_test.go: Visitor tests (PrefixVisitor{Prefix: "visited/"})

CALICO_PREFIXED = [
    ("k == 'v'", 'visited/k == "v"'),
    ("k != 'v'", 'visited/k != "v"'),
    ("k contains 'v'", 'visited/k contains "v"'),
    ("k starts with 'v'", 'visited/k starts with "v"'),
    ("k ends with 'v'", 'visited/k ends with "v"'),
    ("k == 'v' && x == 'y'", '(visited/k == "v" && visited/x == "y")'),
    ("k == 'v' || has(x)", '(visited/k == "v" || has(visited/x))'),
    ("!(k == 'v')", '!visited/k == "v"'),
    ("k in {'v'}", 'visited/k in {"v"}'),
    ("k not in {'v'}", 'visited/k not in {"v"}'),
    ("!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
     '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})'),
]

# -- label_restriction_test.go: the selectors, each with the label keys it
# reads (Calico's LabelRestrictions themselves are not part of this API).

CALICO_LABEL_RESTRICTION_SELECTORS = [
    ("", set()), ("all()", set()), ("global()", set()),
    ("a == 'value'", {"a"}), ("has(a)", {"a"}), ("a in {'v1','v2'}", {"a"}),
    ("a not in {'v1','v2'}", {"a"}), ("a contains 'foo'", {"a"}),
    ("a ends with 'foo'", {"a"}), ("a starts with 'foo'", {"a"}), ("a != 'value'", {"a"}),
    # AND
    ("a == 'v1' && a == 'v1'", {"a"}), ("a == 'v1' && a == 'v2'", {"a"}),
    ("a == 'v1' && has(a)", {"a"}), ("a in {'v1','v2'} && a in {'v2','v3'} ", {"a"}),
    ("a in {'v1','v2', 'v3'} && a in {'v2','v3'} ", {"a"}), ("has(a) && a == 'v1'", {"a"}),
    ("has(a) && !has(a)", {"a"}), ("a == 'v1' && b == 'v2'", {"a", "b"}),
    ("a == 'v1' && all()", {"a"}), ("all() && a == 'v1'", {"a"}),
    # OR
    ("a == 'v1' || a == 'v2'", {"a"}), ("has(a) || a == 'v2'", {"a"}),
    ("a=='v2' || has(a)", {"a"}), ("a=='v2' || has(b)", {"a", "b"}),
    ("a=='v2' || (has(b) && has(a))", {"a", "b"}), ("a == 'v1' || b == 'v2'", {"a", "b"}),
    ("a == 'v1' || all()", {"a"}), ("all() || b == 'v2'", {"b"}),
    # NOT
    ("!(a == 'value')", {"a"}), ("!has(a)", {"a"}), ("!!has(a)", {"a"}),
]

# -- tokenizer_test.go: tokenTests (input, tokens as (kind, value) or None
# for an error).  Kinds are datastore.selector's; EOF is left off.

L, S = selector.LABEL, selector.STRING
CALICO_TOKENS = [
    ('a=="b"', [(L, "a"), ("==", ""), (S, "b")]),
    ('a!="b"', [(L, "a"), ("!=", ""), (S, "b")]),
    ('a != "b"', [(L, "a"), ("!=", ""), (S, "b")]),
    ('(a=="b")', [("(", ""), (L, "a"), ("==", ""), (S, "b"), (")", "")]),
    ('a=="b"', [(L, "a"), ("==", ""), (S, "b")]),
    ('label == "value"', [(L, "label"), ("==", ""), (S, "value")]),
    ('label contains "value"', [(L, "label"), ("contains", ""), (S, "value")]),
    ('contains contains "contains"', [(L, "contains"), ("contains", ""), (S, "contains")]),
    ("contains contains 'contains'", [(L, "contains"), ("contains", ""), (S, "contains")]),
    ('label contains"value"', [(L, "label"), ("contains", ""), (S, "value")]),
    ('label startswith "value"', [(L, "label"), ("starts with", ""), (S, "value")]),
    ('label endswith "value"', [(L, "label"), ("ends with", ""), (S, "value")]),
    ('label starts with "value"', [(L, "label"), ("starts with", ""), (S, "value")]),
    ('startswith starts with "value"', [(L, "startswith"), ("starts with", ""), (S, "value")]),
    ('label ends with "value"', [(L, "label"), ("ends with", ""), (S, "value")]),
    ('endswith ends with "value"', [(L, "endswith"), ("ends with", ""), (S, "value")]),
    ('label starts  with "value"', [(L, "label"), ("starts with", ""), (S, "value")]),
    ('label ends  with "value"', [(L, "label"), ("ends with", ""), (S, "value")]),
    ("a" * 512 + ' == "value"', [(L, "a" * 512), ("==", ""), (S, "value")]),
    ("a" * 513 + ' == "value"', None),
    ('label == "value', None),
    ("label == 'value", None),
    ('label = "value"', None),
    ("all(", None),
    ("global(", None),
    ("has()", None),
    ("has(foo", None),
    ("has( foo ", None),
    ('a == "b" & has(foo)', None),
    ('a == "b" | has(foo)', None),
    ('label starts foo "value"', None),
    ('label inf "value"', None),
    ('label ends foo "value"', None),
    ('label ends withs "value"', None),
    ('label squiggles "value"', None),
    ('a not in "bar" && !has(foo) || b in c',
     [(L, "a"), ("not in", ""), (S, "bar"), ("&&", ""), ("!", ""), ("has", "foo"),
      ("||", ""), (L, "b"), ("in", ""), (L, "c")]),
    ("has(calico/k8s_ns)", [("has", "calico/k8s_ns")]),
    ("has(calico/k8s_ns/role)", [("has", "calico/k8s_ns/role")]),
    ("has(calico/k8s_NS-.1/role)", [("has", "calico/k8s_NS-.1/role")]),
    ('calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
     [(L, "calico/k8s_ns"), ("==", ""), (S, "kube-system"), ("&&", ""),
      (L, "k8s-app"), ("==", ""), (S, "kube-dns")]),
    ('a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c ',
     [(L, "a"), ("not in", ""), (S, "bar"), ("&&", ""), ("!", ""), ("has", "foo"),
      ("||", ""), (L, "b"), ("in", ""), (L, "c")]),
    ('a notin"bar"&&!has(foo)||b in"c"',
     [(L, "a"), ("not in", ""), (S, "bar"), ("&&", ""), ("!", ""), ("has", "foo"),
      ("||", ""), (L, "b"), ("in", ""), (S, "c")]),
    ("a not in {}", [(L, "a"), ("not in", ""), ("{", ""), ("}", "")]),
    ('a not in {"a"}', [(L, "a"), ("not in", ""), ("{", ""), (S, "a"), ("}", "")]),
    ('a not in {"a","B"}',
     [(L, "a"), ("not in", ""), ("{", ""), (S, "a"), (",", ""), (S, "B"), ("}", "")]),
    ("global()", [("global()", "")]),
    ("global( )", [("global()", "")]),
    ("all()", [("all()", "")]),
    ("all( )", [("all()", "")]),
]


def matches(text, labels):
    return parse(text).evaluate(labels)


# -- Calico's tables ---------------------------------------------------------

@pytest.mark.parametrize("text, hits, misses", CALICO_EVALUATION)
def test_calico_evaluation(text, hits, misses):
    sel = parse(text)
    again = parse(sel.canonical)  # "should (not) match after canonicalising"
    for labels in hits:
        assert sel.evaluate(labels) is True, labels
        assert again.evaluate(labels) is True, labels
    for labels in misses:
        assert sel.evaluate(labels) is False, labels
        assert again.evaluate(labels) is False, labels
    assert again.unique_id == sel.unique_id


@pytest.mark.parametrize("text", CALICO_REFUSED)
def test_calico_refused(text):
    with pytest.raises(SelectorError, match="^cannot parse selector "):
        parse(text)


@pytest.mark.parametrize("text, canonical, unique_id", CALICO_CANONICAL)
def test_calico_canonical_form_and_unique_id(text, canonical, unique_id):
    sel = parse(text)
    assert sel.canonical == canonical
    assert sel.text == text
    round_tripped = parse(canonical)
    assert round_tripped.canonical == canonical
    assert round_tripped.unique_id == sel.unique_id
    if unique_id is not None:
        assert sel.unique_id == unique_id


@pytest.mark.parametrize("text, canonical", CALICO_PREFIXED)
def test_calico_prefix_visitor(text, canonical):
    prefixed = parse(text).prefixed("visited/")
    assert prefixed.canonical == canonical
    assert prefixed == parse(canonical)
    assert prefixed.unique_id == parse(canonical).unique_id


@pytest.mark.parametrize("text, keys", CALICO_LABEL_RESTRICTION_SELECTORS)
def test_calico_label_restriction_selectors(text, keys):
    assert label_keys(parse(text)) == keys
    if text:  # as Calico checks: an extra "all() &&" changes nothing
        assert label_keys(parse(f"all() && ({text})")) == keys


@pytest.mark.parametrize("text, tokens", CALICO_TOKENS)
def test_calico_tokenizer(text, tokens):
    if tokens is None:
        with pytest.raises(SelectorError, match="^cannot parse selector "):
            tokenize(text)
        with pytest.raises(SelectorError):
            parse(text)
    else:
        got = tokenize(text)
        assert got[-1][0] == selector.EOF
        assert [(kind, value) for kind, value, _ in got[:-1]] == tokens


# -- answers of libcalico-go's parser itself on generated selectors (see "about")

CORPUS = json.loads((Path(__file__).parent / "calico_selectors.json").read_text())


@pytest.mark.parametrize("text, canonical, unique_id, evaluations", CORPUS["accepted"])
def test_as_calico_answers_accepted(text, canonical, unique_id, evaluations):
    sel = parse(text)
    assert (sel.canonical, sel.unique_id) == (canonical, unique_id)
    assert [sel.evaluate(labels) for labels, _ in evaluations] == [r for _, r in evaluations]


@pytest.mark.parametrize("text", CORPUS["refused"])
def test_as_calico_answers_refused(text):
    with pytest.raises(SelectorError, match="^cannot parse selector "):
        parse(text)


def test_unique_id_is_calicos_make_unique_id():
    # unique_id_test.go: "s:" prefix, 38 characters of unpadded base64url of SHA-224.
    sel = parse("has(a)")
    digest = hashlib.sha224(b"s:has(a)").digest()
    assert sel.unique_id == "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert len(sel.unique_id) == len("s:") + 38
    assert sel.unique_id != parse("has(b)").unique_id
    assert parse("has(a)").unique_id == parse("  has( a )").unique_id


# -- the language of calico-policy.md §3 ------------------------------------

@pytest.mark.parametrize("text, labels, selected", [
    # §3.3, row by row
    ("k == 'v'", {"k": "v"}, True),
    ("k == 'v'", {}, False),
    ("k == ''", {"k": ""}, True),
    ("k == ''", {}, False),
    ("k != 'v'", {}, True),
    ("k != 'v'", {"k": "w"}, True),
    ("k != 'v'", {"k": "v"}, False),
    ("k != ''", {"k": ""}, False),
    ("k in {'v', 'w'}", {"k": "w"}, True),
    ("k in {'v', 'w'}", {}, False),
    ("k in {}", {"k": ""}, False),
    ("k in {''}", {"k": ""}, True),
    ("k not in {'v'}", {}, True),
    ("k not in {'v'}", {"k": "v"}, False),
    ("k not in {}", {"k": "v"}, True),
    ("has(k)", {"k": ""}, True),
    ("has(k)", {"K": "v"}, False),
    ("k contains ''", {"k": ""}, True),
    ("k contains ''", {}, False),
    ("k starts with ''", {}, False),
    ("k ends with ''", {"k": "x"}, True),
    ("k contains 'b'", {"k": "abc"}, True),
    ("k starts with 'ab'", {"k": "abc"}, True),
    ("k starts with 'bc'", {"k": "abc"}, False),
    ("k ends with 'bc'", {"k": "abc"}, True),
    ("k ends with 'ab'", {"k": "abc"}, False),
    ("all()", {}, True),
    ("global()", {"a": "b"}, True),
    ("!all()", {}, False),
    ("!global()", {}, False),
    # exact comparison, byte for byte
    ("k == 'V'", {"k": "v"}, False),
    ("k == 'v '", {"k": "v"}, False),
    ("k == 'é'", {"k": "é"}, True),
    ("k in {'é'}", {"k": "e"}, False),
    # precedence: ! binds tighter than &&, && tighter than ||
    ("has(a) || has(b) && has(c)", {"a": ""}, True),
    ("(has(a) || has(b)) && has(c)", {"a": ""}, False),
    ("!has(a) && has(b)", {"a": "", "b": ""}, False),
    ("!(has(a) && has(b))", {"a": ""}, True),
    ("has(a) && has(b) && has(c) && has(d)", {"a": "", "b": "", "c": "", "d": ""}, True),
    ("has(a) && has(b) && has(c) && has(d)", {"a": "", "b": "", "c": ""}, False),
    ("has(a) || has(b) || has(c)", {"c": ""}, True),
    ("has(a) || has(b) || has(c)", {"d": ""}, False),
    # operator words are labels anywhere but after a label
    ("in in {'in'}", {"in": "in"}, True),
    ("not == 'in'", {"not": "in"}, True),
    ("has == 'x' && all == 'y' && global == 'z'", {"has": "x", "all": "y", "global": "z"}, True),
    ("starts starts with 'with'", {"starts": "without"}, True),
    ("a containsx == 'b' || has(x)", None, None),  # refused: no word boundary
])
def test_semantics(text, labels, selected):
    if labels is None:
        with pytest.raises(SelectorError):
            parse(text)
    else:
        assert matches(text, labels) is selected


@pytest.mark.parametrize("text, canonical", [
    ("a==''", 'a == ""'),
    ("!!has(a)", "has(a)"),
    ("!!!has(a)", "!has(a)"),
    ("!(!has(a))", "!!has(a)"),  # only a run of "!" collapses, as in Calico
    ("((has(a)))", "has(a)"),
    ("has(a) && has(b) && has(c)", "(has(a) && has(b) && has(c))"),
    ("has(a) || has(b) && has(c)", "(has(a) || (has(b) && has(c)))"),
    ("(has(a) || has(b)) && has(c)", "((has(a) || has(b)) && has(c))"),
    ("(has(a) && has(b)) && has(c)", "((has(a) && has(b)) && has(c))"),
    ("!(a == 'b')", '!a == "b"'),
    ("a notin {'x',}", 'a not in {"x"}'),
    ("a in {}", "a in {}"),
    ("a in {'\"', \"'\"}", "a in {'\"', \"'\"}"),
    ("a in { 'b' , 'a' , }", 'a in {"a", "b"}'),
    ("\thas(a)\t&&\tglobal( )", "(has(a) && global())"),
    ("role == 'database' && has(net1)", '(role == "database" && has(net1))'),
])
def test_canonical_form(text, canonical):
    sel = parse(text)
    assert sel.canonical == canonical == str(sel)
    if "!!" not in canonical:  # which Calico's canonical form does not keep
        assert parse(canonical).canonical == canonical


@pytest.mark.parametrize("text, why", [
    ("zone = 'a'", "expected =="),
    ("a == 'b' & has(c)", "expected &&"),
    ("a == 'b' | has(c)", "expected ||"),
    ("has(a) has(b)", "expected && or || but found has(b)"),
    ("a", "expected an operator after label 'a'"),
    ("a == b", "expected a quoted string after 'a ==' but found label b"),
    ("a in 'b'", "expected a set literal"),
    ("a in {'b' 'c'}", "in the set after 'a in'"),
    ("a in {,}", "in the set after 'a in'"),
    ("a in {'b',,}", "in the set after 'a in'"),
    ("(has(a)", "expected &&, || or \\)"),
    ("has(a))", "expected && or || but found '\\)'"),
    ("&& has(a)", "expected has\\(\\), all\\(\\), global\\(\\), !, \\( or a label"),
    ("has(a", "no closing '\\)' after has\\("),
    ("has(a b)", "no closing '\\)' after has\\("),
    ("all(x)", "no closing '\\)' after all\\("),
    ("has(ü)", "expected a label key"),
    ("ü == 'a'", "expected a label key"),
    ("a == 'b' \n", "expected a label key"),  # only space and tab are whitespace
    ("\n", "expected a label key"),
    ("has(\na)", "expected a label key"),
    ("a starts\nwith 'b'", "expected an operator after label 'a'"),
    ("x" * 513 + " == 'a'", "longer than 512"),
    ("a == 'b", "unterminated string"),
])
def test_errors_name_the_selector_and_the_problem(text, why):
    with pytest.raises(SelectorError, match="^cannot parse selector ") as error:
        parse(text)
    assert repr(text) in str(error.value)
    assert error.match(why)


def test_error_points_at_the_rest_of_the_input():
    with pytest.raises(SelectorError) as error:
        parse("has(a) && b == c || has(d)")
    assert str(error.value) == ("cannot parse selector 'has(a) && b == c || has(d)': "
                                "expected a quoted string after 'b ==' but found label c "
                                "at 'c || has(d)'")


@pytest.mark.parametrize("text, tokens", [
    # a one-word operator must end at a word boundary right away, a two-word
    # one may have spaces first (tokenizer.go)
    ("a in c", [(L, "a"), ("in", ""), (L, "c")]),
    ("a contains c", [(L, "a"), ("contains", ""), (L, "c")]),
    ("a not in c", None),
    ("a starts with c", None),
    ("a not in{", [(L, "a"), ("not in", ""), ("{", "")]),
    ("a notin", [(L, "a"), ("not in", "")]),
    ("a ==", [(L, "a"), ("==", "")]),
    ("a\t!=\t'b'", [(L, "a"), ("!=", ""), (S, "b")]),
    ("has(a)has(b)", [("has", "a"), ("has", "b")]),
    ("a == 'b'c", [(L, "a"), ("==", ""), (S, "b"), (L, "c")]),
    ("a b", None),
    ("!!", [("!", ""), ("!", "")]),
    ("a ! = 'b'", None),
])
def test_tokenizer_details(text, tokens):
    test_calico_tokenizer(text, tokens)


def test_nesting():
    deep = "(" * selector.MAX_NESTING + "has(a)" + ")" * selector.MAX_NESTING
    assert parse(deep).canonical == "has(a)"
    too_deep = "(" + deep + ")"
    with pytest.raises(SelectorError, match="nested more than"):
        parse(too_deep)
    negations = "!(" * 50 + "has(a)" + ")" * 50
    assert parse(negations).evaluate({"a": ""}) is True
    assert parse("!" * 1001 + "has(a)").canonical == "!has(a)"


def test_deep_call_stack_gives_a_selector_error():
    depth = sys.getrecursionlimit()
    text = "(" * selector.MAX_NESTING + "has(zz)" + ")" * selector.MAX_NESTING

    def recurse(n):
        if n == 0:
            return parse(text)
        return recurse(n - 1)
    with pytest.raises(SelectorError, match="nested too deeply"):
        recurse(depth - 150)


def test_label_key_length():
    key = "k" * 512
    assert label_keys(parse(f"has({key})")) == {key}
    with pytest.raises(SelectorError, match="longer than 512"):
        parse(f"has({key}k)")


def test_empty_and_blank_selectors_are_all():
    for text in ("", " ", "\t", " \t ", "all()", "( all( ) )"):
        sel = parse(text)
        assert sel.canonical == "all()" and sel.text == text
        assert sel == parse("all()") and sel.evaluate({}) is True
        assert label_keys(sel) == frozenset()
    assert parse("global()") != parse("all()")


def test_label_keys():
    sel = parse("a == 'x' || !has(b) && (c in {'y'} || d not in {} || e contains 'z') "
                "|| f starts with '' || g ends with '' || h != 'q' || all()")
    assert label_keys(sel) == frozenset("abcdefgh")
    assert isinstance(label_keys(sel), frozenset)


def test_selector_value_semantics():
    a, b = parse("has(x) && y == 'z'"), parse("has( x )&&y=='z'")
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    assert a.text != b.text
    assert a != parse("y == 'z' && has(x)")  # canonical form keeps the order
    assert a != "has(x) && y == 'z'"
    assert repr(a) == "Selector('(has(x) && y == \"z\")')"
    with pytest.raises(AttributeError):
        a.canonical = "all()"
    with pytest.raises(AttributeError):
        a.other = 1
    with pytest.raises(AttributeError):
        del a.text
    assert copy.copy(a) is a and copy.deepcopy(a) is a
    restored = pickle.loads(pickle.dumps(a))
    assert restored == a and restored.text == a.text


def test_parse_is_cached():
    assert parse("has(cached)") is parse("has(cached)")
    assert parse.cache_info().maxsize >= 256


def test_not_a_string():
    with pytest.raises(SelectorError, match="not a string"):
        parse(b"has(a)")


def test_evaluates_any_mapping():
    sel = parse("a == 'b' && c not in {'d'} && e contains 'f'")
    assert sel.evaluate(types.MappingProxyType({"a": "b", "e": "ff"})) is True
    assert sel.evaluate({"a": "b", "c": "d", "e": "f"}) is False


def test_prefixed():
    sel = parse("a == 'b' && !has(c) || d in {'e'}")
    ns = sel.prefixed("pcns.")
    assert ns.canonical == '((pcns.a == "b" && !has(pcns.c)) || pcns.d in {"e"})'
    assert ns.text == ns.canonical
    assert label_keys(ns) == {"pcns.a", "pcns.c", "pcns.d"}
    assert ns.evaluate({"pcns.a": "b"}) is True
    assert ns.evaluate({"a": "b"}) is False
    assert ns.evaluate({"pcns.d": "e", "pcns.c": ""}) is True
    assert parse("global()").prefixed("pcns.").canonical == "global()"
    assert parse("").prefixed("pcns.") == parse("all()")
    assert sel.canonical == '((a == "b" && !has(c)) || d in {"e"})'  # unchanged


# -- IPPool nodeSelectors (what ipam/selector.py was tested for) -------------

@pytest.mark.parametrize("text, labels, selected", [
    ("all()", {}, True),
    ("", {}, True),
    ("has(zone)", {"zone": "a"}, True),
    ("has(zone)", {}, False),
    ("!has(zone)", {}, True),
    ("zone == 'a'", {"zone": "a"}, True),
    ('zone == "a"', {"zone": "b"}, False),
    ("zone != 'a'", {}, True),  # as in Calico: a missing label is "not 'a'"
    ("zone != 'a'", {"zone": "a"}, False),
    ("has(gpu) && zone == 'a'", {"zone": "a"}, False),
    ("has(gpu) || zone == 'a'", {"zone": "a"}, True),
    ("!(has(gpu) || zone == 'b') && all()", {"zone": "a"}, True),
    ("kubernetes.io/os == 'linux'", {"kubernetes.io/os": "linux"}, True),
    ("zone in {'a'}", {"zone": "a"}, True),  # refused before the full language
])
def test_node_selectors(text, labels, selected):
    assert matches(text, labels) is selected


@pytest.mark.parametrize("text", ["has(zone", "zone ==", "zone == a", "&& has(a)",
                                  "has(a) has(b)", "all() ||", "(has(a)"])
def test_node_selectors_refused(text):
    with pytest.raises(SelectorError, match="^cannot parse selector "):
        parse(text)


def test_api():
    assert selector.__all__ == ["Selector", "SelectorError", "parse"]
    assert issubclass(SelectorError, ValueError)
    assert isinstance(parse("has(a)"), Selector)
