"""How the commands print: aligned tables for people, JSON (and calicoctl's
YAML) for scripts."""

import json
from typing import NamedTuple

import yaml

from datastore.resources import Resource

_GAP = "   "  # calicoctl's tabwriter padding


class Outcome(NamedTuple):
    """What a create/apply/delete did to one object."""
    action: str  # created, updated, unchanged, deleted
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, action: str, res: Resource) -> "Outcome":
        return cls(action, res.kind, res.name, res.namespace)


def add_output_option(parser, *formats: str) -> None:
    parser.add_argument("-o", "--output", choices=formats, default=None,
                        help="output format: " + "|".join(formats)
                             + " (default: a table)")


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(cell, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def table(headers, rows) -> None:
    lines = [list(headers)] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    for line in lines:
        print(_GAP.join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def as_json(value) -> None:
    print(json.dumps(value, indent=2))


def as_yaml(value) -> None:
    # Sorted keys, block style: what calicoctl -o yaml prints.
    print(yaml.safe_dump(value, default_flow_style=False, sort_keys=True), end="")


def structured(value, output: str) -> None:
    (as_json if output == "json" else as_yaml)(value)


def outcomes(done: list[Outcome], output: str | None) -> None:
    if output == "json":
        as_json([{k: v for k, v in o._asdict().items() if v is not None} for o in done])
        return
    with_namespace = any(o.namespace for o in done)
    headers = ["RESULT", "KIND", "NAME"] + (["NAMESPACE"] if with_namespace else [])
    table(headers, [o[:4] if with_namespace else o[:3] for o in done])
