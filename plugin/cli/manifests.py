"""Manifests given with -f: YAML (or JSON) files or stdin, holding one object,
a multi-document stream, a `kind: List` (or calicoctl's `<Kind>List`) with
items, or calicoctl v1 objects; read into v3 Resources with basic checks."""

import re
import sys

import yaml

from datastore.resources import API_VERSION, PLURALS, Resource, valid_name
from plugin.cli import manifests_v1
from plugin.cli.errors import CommandError
from plugin.cli.kinds import DEFAULT_NAMESPACE, namespaced


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers: `ports: [22:59]` is the
    port range "22:59", as calicoctl's YAML reader (and YAML 1.2) reads it,
    not the integer 1379."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
# PyYAML's own patterns, less their sexagesimal alternatives.
_Loader.add_implicit_resolver(_FLOAT, re.compile(r"""^(?:
      [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
_Loader.add_implicit_resolver(_INT, re.compile(r"""^(?:
      [-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))


def load(path: str, namespace: str | None = None) -> list[Resource]:
    """Every object in the file ('-': stdin); namespace: for namespaced
    objects that name none (default: the plugin's)."""
    where = "stdin" if path == "-" else path
    try:
        docs = list(yaml.load_all(_read(path), Loader=_Loader))
    except yaml.YAMLError as exc:
        raise CommandError(f"cannot parse {where} as YAML: {exc}") from None
    objects = [_resource(doc, namespace, f"{where}: {_what(doc)}")
               for doc in _flatten(docs, where)]
    if not objects:
        raise CommandError(f"{where} holds no resources")
    return objects


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CommandError(f"cannot read {path}: {reason}") from None


def _flatten(docs, where: str) -> list[dict]:
    found = []
    for doc in docs:
        if doc is None:
            continue  # an empty document, e.g. after a trailing ---
        if isinstance(doc, list):  # calicoctl v1 took a YAML list of objects
            found += _flatten(doc, where)
        elif not isinstance(doc, dict):
            raise CommandError(f"{where}: expected a resource (a mapping with apiVersion, "
                               f"kind, metadata, spec), got {type(doc).__name__}")
        elif str(doc.get("kind", "")).endswith("List") and "items" in doc:
            found += _flatten(doc.get("items") or [], where)
        else:
            found.append(doc)
    return found


def _what(doc: dict) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return f"{doc.get('kind', '(no kind)')} {meta.get('name') or meta.get('cidr') or ''}".strip()


def _resource(doc: dict, namespace: str | None, where: str) -> Resource:
    if doc.get("apiVersion") == manifests_v1.V1_API_VERSION:
        doc = manifests_v1.convert(doc, where)
    elif doc.get("apiVersion") != API_VERSION:
        raise CommandError(f"{where}: apiVersion {doc.get('apiVersion')!r} is not supported; "
                           f"use {API_VERSION} (or calicoctl v1's v1 for ipPool and profile)")
    kind = doc.get("kind")
    if kind not in PLURALS:
        raise CommandError(f"{where}: unknown kind {kind!r}; supported: {', '.join(PLURALS)}")
    for key in ("metadata", "spec"):
        if not isinstance(doc.get(key) or {}, dict):
            raise CommandError(f"{where}: {key} must be a mapping")
    res = Resource.from_dict(doc, revision=_revision(doc, where))
    if not isinstance(res.name, str) or not valid_name(res.name):
        raise CommandError(f"{where}: metadata.name {res.name!r} is not valid: use lower-case "
                           "letters, digits, '-' and '.', starting and ending with a letter "
                           "or digit")
    if namespaced(kind):
        res.namespace = res.namespace or namespace or DEFAULT_NAMESPACE
        if not valid_name(str(res.namespace)):
            raise CommandError(f"{where}: namespace {res.namespace!r} is not valid")
    elif res.namespace:
        raise CommandError(f"{where}: {kind} is not namespaced; remove metadata.namespace")
    return res


def _revision(doc: dict, where: str) -> int | None:
    """metadata.resourceVersion: given, an update only succeeds at that revision."""
    value = doc["metadata"].get("resourceVersion") if doc.get("metadata") else None
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise CommandError(f"{where}: resourceVersion {value!r} is not one this datastore "
                           "wrote; remove it") from None
