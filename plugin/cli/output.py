"""How the commands print: aligned tables for people, JSON (and calicoctl's
YAML) for scripts."""

import json
from typing import NamedTuple

import yaml

from datastore.resources import Resource
from plugin.cli.kinds import shown_name

_GAP = "   "  # calicoctl's tabwriter padding


class Outcome(NamedTuple):
    """What a create/apply/delete did to one object."""
    result: str  # created, updated, unchanged, deleted
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, result: str, res: Resource) -> "Outcome":
        return cls(result, res.kind, shown_name(res.kind, res.name), res.namespace)


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
    """Aligned columns; headers None: key/value lines without a heading."""
    lines = ([list(headers)] if headers else []) + [[cell(v) for v in row] for row in rows]
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print(_GAP.join(c.ljust(w) for c, w in zip(line, widths)).rstrip())


def as_json(value) -> None:
    print(json.dumps(value, indent=2))


def as_yaml(value) -> None:
    # Sorted keys, block style: what calicoctl -o yaml prints.
    print(yaml.safe_dump(value, default_flow_style=False, sort_keys=True), end="")


def structured(value, output: str) -> None:
    (as_json if output == "json" else as_yaml)(value)


def outcomes_of(act, items, output: str | None) -> None:
    """Run act(item) -> Outcome for each item in order, then print what was
    done, also when one fails half-way (the error is reported after)."""
    done = []
    try:
        for item in items:
            done.append(act(item))
    finally:
        if done:
            outcomes(done, output)


def outcomes(done: list[Outcome], output: str | None) -> None:
    if output == "json":
        as_json([{k: v for k, v in o._asdict().items() if v is not None} for o in done])
        return
    with_namespace = any(o.namespace for o in done)
    headers = ["RESULT", "KIND", "NAME"] + (["NAMESPACE"] if with_namespace else [])
    table(headers, [o[:4] if with_namespace else o[:3] for o in done])
