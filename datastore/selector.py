"""Calico label selectors: the one parser and evaluator for IPPool
nodeSelectors and network policy (calico-policy.md §3).

A port of libcalico-go's lib/selector (tokenizer/tokenizer.go, parser/parser.go,
parser/ast.go, parser/stringset.go) and lib/hash/unique_id.go:

* the same tokens: whitespace is only space and tab; strings are "..." or '...'
  with no escapes; label keys are [a-zA-Z0-9_./-]{1,512}; after a label the
  operator words contains, starts with, ends with, not in, in (the space inside
  the two-word forms is optional; the operator must end at a word boundary);
* the same grammar, with || binding weaker than && and && weaker than prefix !
  (runs of ! collapse: an even number cancels out); an empty selector is all();
* the same canonical form, character for character, and the same UniqueID
  ("s:" + base64url without padding of SHA-224 of "s:" + canonical), which is
  what Felix names its IP sets after.

    >>> s = parse("role == 'db' && has(net1)")
    >>> s.canonical, s.evaluate({"role": "db", "net1": ""})
    ('(role == "db" && has(net1))', True)

Selectors are compiled once to closures and cached by parse(); evaluate() only
looks labels up.
"""

import base64
import functools
import hashlib
from collections.abc import Mapping

__all__ = ["Selector", "SelectorError", "parse"]

MAX_LABEL_LENGTH = 512  # tokenizer.MaxLabelLength
# Calico has no limit; Python's recursion has one.  Parentheses nested deeper
# are refused (SelectorError) rather than risking a RecursionError.
MAX_NESTING = 100

Labels = Mapping[str, str]


class SelectorError(ValueError):
    """A selector that Calico would refuse; the message names the selector
    text and what is wrong with it."""


# -- tokens (tokenizer.go) ---------------------------------------------------

LABEL, STRING = "label", "string"
LBRACE, RBRACE, COMMA, LPAREN, RPAREN = "{", "}", ",", "(", ")"
EQ, NE, NOT, AND, OR = "==", "!=", "!", "&&", "||"
IN, NOT_IN, CONTAINS = "in", "not in", "contains"
STARTS_WITH, ENDS_WITH = "starts with", "ends with"
HAS, ALL, GLOBAL, EOF = "has", "all()", "global()", "end"

_WHITESPACE = " \t"
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-")
_PUNCTUATION = {"(": LPAREN, ")": RPAREN, "{": LBRACE, "}": RBRACE, ",": COMMA}
# After a label, tried in this order (tokenizer.go); see _cut_words.
_OPERATOR_WORDS = ((CONTAINS, ("contains",)), (STARTS_WITH, ("starts", "with")),
                   (ENDS_WITH, ("ends", "with")), (NOT_IN, ("not", "in")), (IN, ("in",)))
_FUNCTIONS = (("all(", ALL), ("global(", GLOBAL))


class _Failure(Exception):
    """What is wrong, and at which offset of the text."""

    def __init__(self, why, pos):
        super().__init__(why)
        self.why, self.pos = why, pos


def _tokenize(text):
    tokens, pos, end = [], 0, len(text)
    while True:
        pos = _skip_whitespace(text, pos)
        if pos == end:
            tokens.append((EOF, "", pos))
            return tokens
        start, c = pos, text[pos]
        if c in _PUNCTUATION:
            tokens.append((_PUNCTUATION[c], "", start))
            pos += 1
        elif c == '"' or c == "'":
            close = text.find(c, pos + 1)
            if close == -1:
                raise _Failure("unterminated string", start)
            tokens.append((STRING, text[pos + 1:close], start))
            pos = close + 1
        elif c in "=&|":
            double = c + c
            if not text.startswith(double, pos):
                raise _Failure(f"expected {double}", start)
            tokens.append(({"=": EQ, "&": AND, "|": OR}[c], "", start))
            pos += 2
        elif c == "!":
            if text.startswith("!=", pos):
                tokens.append((NE, "", start))
                pos += 2
            else:
                tokens.append((NOT, "", start))
                pos += 1
        elif tokens and tokens[-1][0] == LABEL:
            for kind, words in _OPERATOR_WORDS:
                after = _cut_words(text, pos, words)
                if after is not None:
                    tokens.append((kind, "", start))
                    pos = after
                    break
            else:
                raise _Failure(f"expected an operator after label {tokens[-1][1]!r} "
                                  "(==, !=, in, not in, contains, starts with, ends with)", start)
        elif text.startswith("has(", pos):
            pos = _skip_whitespace(text, pos + 4)
            key, pos = _cut_identifier(text, pos)
            pos = _skip_whitespace(text, pos)
            if not text.startswith(")", pos):
                raise _Failure("no closing ')' after has(", pos)
            tokens.append((HAS, key, start))
            pos += 1
        else:
            for opening, kind in _FUNCTIONS:
                if text.startswith(opening, pos):
                    pos = _skip_whitespace(text, pos + len(opening))
                    if not text.startswith(")", pos):
                        raise _Failure(f"no closing ')' after {opening}", pos)
                    tokens.append((kind, "", start))
                    pos += 1
                    break
            else:
                key, pos = _cut_identifier(text, pos)
                tokens.append((LABEL, key, start))


def _skip_whitespace(text, pos):
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _cut_identifier(text, pos):
    end = pos
    while end < len(text) and text[end] in _IDENT_CHARS:
        end += 1
    if end == pos:
        found = repr(text[pos]) if pos < len(text) else "the end"
        raise _Failure(f"expected a label key ([a-zA-Z0-9_./-]) but found {found}", pos)
    if end - pos > MAX_LABEL_LENGTH:
        raise _Failure(f"label key longer than {MAX_LABEL_LENGTH} characters", pos)
    return text[pos:end], end


def _cut_words(text, pos, words):
    """Where `words` end, if they end at a word boundary; else None.  As in
    tokenizer.go (cutPrefixCheckBreak, cutMultiWordPrefixCheckBreak), a
    two-word operator takes the spaces after each word, optional ones between
    them included, before the boundary is checked; a one-word operator takes none."""
    for word in words:
        if not text.startswith(word, pos):
            return None
        pos += len(word)
        if len(words) > 1:
            pos = _skip_whitespace(text, pos)
    if pos < len(text) and text[pos] in _IDENT_CHARS:
        return None
    return pos


# -- syntax tree (ast.go) -----------------------------------------------------
# Each node knows its canonical fragments, how to compile itself to a
# predicate, and how to rename its keys (PrefixVisitor).

def _quoted(value):
    quote = "'" if '"' in value else '"'
    return quote + value + quote


class _Node:
    __slots__ = ()

    def prefixed(self, prefix: str) -> "_Node":
        return self


class _All(_Node):
    __slots__ = ()
    text = "all()"

    def fragments(self, out):
        out.append(self.text)

    def compile(self):
        return _always


class _Global(_All):
    __slots__ = ()
    text = "global()"


def _always(labels):
    return True


class _Has(_Node):
    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def fragments(self, out):
        out.extend(("has(", self.key, ")"))

    def prefixed(self, prefix):
        return _Has(prefix + self.key)

    def compile(self):
        key = self.key
        return lambda labels: key in labels


class _Compare(_Node):
    """key <op> "value": ==, !=, contains, starts with, ends with."""
    __slots__ = ("op", "key", "value")

    def __init__(self, op, key, value):
        self.op, self.key, self.value = op, key, value

    def fragments(self, out):
        out.extend((self.key, " ", self.op, " ", _quoted(self.value)))

    def prefixed(self, prefix):
        return _Compare(self.op, prefix + self.key, self.value)

    def compile(self):
        key, value, op = self.key, self.value, self.op
        if op == EQ:
            return lambda labels: labels.get(key) == value
        if op == NE:  # true when the label is absent, as in Calico
            return lambda labels: labels.get(key) != value
        if op == CONTAINS:
            return lambda labels: (have := labels.get(key)) is not None and value in have
        if op == STARTS_WITH:
            return lambda labels: (have := labels.get(key)) is not None and have.startswith(value)
        return lambda labels: (have := labels.get(key)) is not None and have.endswith(value)


class _InSet(_Node):
    """key in {...} / key not in {...}; values sorted and de-duplicated."""
    __slots__ = ("op", "key", "values")

    def __init__(self, op, key, values):
        self.op, self.key, self.values = op, key, tuple(sorted(set(values)))

    def fragments(self, out):
        out.extend((self.key, " ", self.op, " {", ", ".join(map(_quoted, self.values)), "}"))

    def prefixed(self, prefix):
        return _InSet(self.op, prefix + self.key, self.values)

    def compile(self):
        key, values = self.key, frozenset(self.values)
        if self.op == IN:  # absent: None is in no set of strings
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values


class _Not(_Node):
    __slots__ = ("operand",)

    def __init__(self, operand):
        self.operand = operand

    def fragments(self, out):
        out.append("!")
        self.operand.fragments(out)

    def prefixed(self, prefix):
        return _Not(self.operand.prefixed(prefix))

    def compile(self):
        if isinstance(self.operand, _Has):
            key = self.operand.key
            return lambda labels: key not in labels
        inner = self.operand.compile()
        return lambda labels: not inner(labels)


class _Group(_Node):
    """Two or more operands joined by && or ||; always printed in parentheses."""
    __slots__ = ("op", "operands")

    def __init__(self, op, operands):
        self.op, self.operands = op, tuple(operands)

    def fragments(self, out):
        out.append("(")
        for i, operand in enumerate(self.operands):
            if i:
                out.append(f" {self.op} ")
            operand.fragments(out)
        out.append(")")

    def prefixed(self, prefix):
        return _Group(self.op, [o.prefixed(prefix) for o in self.operands])

    def compile(self):
        parts = tuple(o.compile() for o in self.operands)
        if self.op == AND:
            if len(parts) == 2:
                a, b = parts
                return lambda labels: a(labels) and b(labels)
            return lambda labels: all(p(labels) for p in parts)
        if len(parts) == 2:
            a, b = parts
            return lambda labels: a(labels) or b(labels)
        return lambda labels: any(p(labels) for p in parts)


# -- parser (parser.go) -------------------------------------------------------

_COMPARISONS = frozenset((EQ, NE, CONTAINS, STARTS_WITH, ENDS_WITH))


class _Parser:
    # or    := and ("||" and)*
    # and   := unary ("&&" unary)*
    # unary := "!"* primary
    # primary := has(KEY) | all() | global() | "(" or ")"
    #          | KEY (== | != | contains | starts with | ends with) STRING
    #          | KEY (in | not in) "{" [STRING ("," STRING)* [","]] "}"

    def __init__(self, tokens):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def fail(self, why, token=None):
        token = token or self.tokens[self.pos]
        raise _Failure(why, token[2])

    def next(self):
        token = self.tokens[self.pos]
        if token[0] != EOF:
            self.pos += 1
        return token

    def joined(self, op, operand):
        operands = [operand()]
        while self.tokens[self.pos][0] == op:
            self.pos += 1
            operands.append(operand())
        return operands[0] if len(operands) == 1 else _Group(op, operands)

    def or_(self):
        return self.joined(OR, self.and_)

    def and_(self):
        return self.joined(AND, self.unary)

    def unary(self):
        negated = False
        while self.tokens[self.pos][0] == NOT:
            negated = not negated
            self.pos += 1
        node = self.primary()
        return _Not(node) if negated else node

    def primary(self):
        token = self.next()
        kind, value = token[0], token[1]
        if kind == HAS:
            return _Has(value)
        if kind == ALL:
            return _All()
        if kind == GLOBAL:
            return _Global()
        if kind == LPAREN:
            self.depth += 1
            if self.depth > MAX_NESTING:
                self.fail(f"parentheses nested more than {MAX_NESTING} deep", token)
            node = self.or_()
            if self.tokens[self.pos][0] != RPAREN:
                self.fail(f"expected &&, || or ) but found {_describe(self.tokens[self.pos])}")
            self.pos += 1
            self.depth -= 1
            return node
        if kind == LABEL:
            op = self.next()
            if op[0] in _COMPARISONS:
                literal = self.next()
                if literal[0] != STRING:
                    self.fail(f"expected a quoted string after '{value} {op[0]}' but found "
                              f"{_describe(literal)}", literal)
                return _Compare(op[0], value, literal[1])
            if op[0] in (IN, NOT_IN):
                return _InSet(op[0], value, self.set_literal(value, op[0]))
            self.fail(f"expected an operator after label {value!r} but found {_describe(op)}", op)
        self.fail(f"expected has(), all(), global(), !, ( or a label but found {_describe(token)}",
                  token)

    def set_literal(self, key, op):
        brace = self.next()
        if brace[0] != LBRACE:
            self.fail(f"expected a set literal {{...}} after '{key} {op}' but found "
                      f"{_describe(brace)}", brace)
        values = []
        while self.tokens[self.pos][0] == STRING:
            values.append(self.next()[1])
            if self.tokens[self.pos][0] != COMMA:
                break
            self.pos += 1
        if self.tokens[self.pos][0] != RBRACE:
            self.fail(f"expected a quoted string, ',' or '}}' in the set after '{key} {op}' "
                      f"but found {_describe(self.tokens[self.pos])}")
        self.pos += 1
        return values


def _describe(token):
    kind, value = token[0], token[1]
    if kind == EOF:
        return "the end of the selector"
    if kind == STRING:
        return f"string {_quoted(value)}"
    if kind == LABEL:
        return f"label {value}"
    if kind == HAS:
        return f"has({value})"
    return repr(kind)


def _error(text, why, pos):
    rest = text[pos:]
    where = f" at {rest!r}" if rest else ""
    return SelectorError(f"cannot parse selector {text!r}: {why}{where}")


def _parse_tree(text):
    tokens = _tokenize(text)
    if tokens[0][0] == EOF:
        return _All()
    parser = _Parser(tokens)
    root = parser.or_()
    if tokens[parser.pos][0] != EOF:
        parser.fail(f"expected && or || but found {_describe(tokens[parser.pos])}")
    return root


# -- the public face -----------------------------------------------------------

def _unique_id(canonical: str) -> str:
    """hash.MakeUniqueID("s", canonical)."""
    digest = hashlib.sha224(b"s:" + canonical.encode()).digest()
    return "s:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Selector:
    """A parsed selector: immutable, equal and hashed by its canonical form.

    text       the selector as given
    canonical  Calico's canonical form (Selector.String()); "all()" when empty
    unique_id  Calico's UniqueID, "s:" + base64url(SHA-224("s:" + canonical))
    """
    __slots__ = ("text", "canonical", "unique_id", "_root", "_evaluate")

    def __init__(self, text: str, root: _Node):
        fragments = []
        root.fragments(fragments)
        canonical = "".join(fragments)
        for name, value in (("text", text), ("canonical", canonical),
                            ("unique_id", _unique_id(canonical)), ("_root", root),
                            ("_evaluate", root.compile())):
            object.__setattr__(self, name, value)

    def evaluate(self, labels: Labels) -> bool:
        """Whether a label set (any mapping of str to str) matches."""
        return self._evaluate(labels)

    def prefixed(self, prefix: str) -> "Selector":
        """This selector with `prefix` put before every label key, as Calico's
        PrefixVisitor does (e.g. "pcns." for a namespaceSelector, §2.6)."""
        root = self._root.prefixed(prefix)
        fragments = []
        root.fragments(fragments)
        return Selector("".join(fragments), root)

    def __eq__(self, other):
        if not isinstance(other, Selector):
            return NotImplemented
        return self.canonical == other.canonical

    def __hash__(self):
        return hash(self.canonical)

    def __str__(self):
        return self.canonical

    def __repr__(self):
        return f"Selector({self.canonical!r})"

    def __setattr__(self, name, value):
        raise AttributeError("Selector is immutable")

    def __delattr__(self, name):
        raise AttributeError("Selector is immutable")

    def __reduce__(self):
        return parse, (self.text,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


@functools.lru_cache(maxsize=1024)
def parse(text: str) -> Selector:
    """Parse a selector as Calico does; "" (or only spaces and tabs) is all().
    Raises SelectorError for anything Calico would refuse."""
    if not isinstance(text, str):
        raise SelectorError(f"cannot parse selector {text!r}: not a string")
    try:
        return Selector(text, _parse_tree(text))
    except _Failure as exc:
        raise _error(text, exc.why, exc.pos) from None
    except RecursionError:  # only when called from deep in the stack
        raise SelectorError(f"cannot parse selector {text!r}: nested too deeply") from None
