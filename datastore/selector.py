"""A minimal evaluator for Calico label selectors, enough for IPPool
nodeSelectors: all(), has(k), !has(k), k == 'v', k != 'v', grouped with
parentheses and combined with ! && ||.  Anything else is refused with a
SelectorError rather than guessed at.
"""

import re
from typing import Callable

Labels = dict[str, str]
Predicate = Callable[[Labels], bool]

_TOKEN_RE = re.compile(r"""
    \s*(?:
      (?P<all>all\(\s*\))
    | has\(\s*(?P<has>[A-Za-z0-9_./-]+)\s*\)
    | (?P<op>==|!=|&&|\|\||!|\(|\))
    | '(?P<sq>[^']*)' | "(?P<dq>[^"]*)"
    | (?P<key>[A-Za-z0-9_./-]+)
    )""", re.VERBOSE)

SUPPORTED = "all(), has(k), !has(k), k == 'v', k != 'v', ( ), &&, ||"


class SelectorError(ValueError):
    pass


def parse(text: str) -> Predicate:
    """Compile a selector; an empty one selects everything, as in Calico."""
    tokens = _tokenize(text)
    if not tokens:
        return lambda labels: True
    parser = _Parser(text, tokens)
    predicate = parser.expression()
    if parser.pos != len(tokens):
        parser.fail("unexpected " + repr(tokens[parser.pos][1]))
    return predicate


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise SelectorError(f"cannot parse selector {text!r} at {text[pos:].strip()!r}; "
                                f"supported: {SUPPORTED}")
        kind = match.lastgroup
        value = match.group(kind)
        tokens.append(("str" if kind in ("sq", "dq") else kind, value))
        pos = match.end()
    return tokens


class _Parser:
    # expression := conjunction ('||' conjunction)*
    # conjunction := unary ('&&' unary)*
    # unary := '!' unary | '(' expression ')' | all() | has(k) | k ('=='|'!=') 'v'

    def __init__(self, text, tokens):
        self.text, self.tokens, self.pos = text, tokens, 0

    def fail(self, why):
        raise SelectorError(f"cannot parse selector {self.text!r}: {why}; supported: {SUPPORTED}")

    def peek(self, value=None):
        if self.pos >= len(self.tokens):
            return None
        token = self.tokens[self.pos]
        return token if value is None or token == ("op", value) else None

    def take(self):
        token = self.peek()
        if token is None:
            self.fail("unexpected end")
        self.pos += 1
        return token

    def expression(self) -> Predicate:
        parts = [self.conjunction()]
        while self.peek("||"):
            self.pos += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else lambda labels: any(p(labels) for p in parts)

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.peek("&&"):
            self.pos += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else lambda labels: all(p(labels) for p in parts)

    def unary(self) -> Predicate:
        kind, value = self.take()
        if (kind, value) == ("op", "!"):
            inner = self.unary()
            return lambda labels: not inner(labels)
        if (kind, value) == ("op", "("):
            inner = self.expression()
            if self.take() != ("op", ")"):
                self.fail("missing ')'")
            return inner
        if kind == "all":
            return lambda labels: True
        if kind == "has":
            return lambda labels: value in labels
        if kind == "key":
            op = self.take()
            if op not in (("op", "=="), ("op", "!=")):
                self.fail(f"expected == or != after {value!r}")
            kind2, wanted = self.take()
            if kind2 != "str":
                self.fail(f"expected a quoted value after {value} {op[1]}")
            if op[1] == "==":
                return lambda labels: labels.get(value) == wanted
            # As in Calico, k != 'v' also matches nodes without label k.
            return lambda labels: labels.get(value) != wanted
        self.fail(f"unexpected {value!r}")
