"""The BGP sessions in BIRD's `show protocols`, read as `calicoctl node
status` reads them (calicoctl/commands/node/status.go, unmarshalBIRD).

Only protocols named as calico/node's templates name its peers count:
Mesh_<ip> (node-to-node mesh), Node_<ip> (node specific), Global_<ip>
(global), the address's dots or colons written as `_`.  A row with fewer
than six columns (a protocol that is down with no message) is skipped, as
calicoctl skips it.  One BIRD 2 speaks both families, so the family comes
from the name: four decimal groups are IPv4, anything else IPv6.
"""

import re
from dataclasses import dataclass

from agent.bgp.control import command

PEER_TYPES = {"Mesh": "node-to-node mesh", "Node": "node specific", "Global": "global"}
ESTABLISHED = "Established"
_NAME = re.compile(r"^(Global|Node|Mesh)_(.+)$")
_PORT = re.compile(r"_port_\d+$")
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(_(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
# BIRD 1.6 heads the table in lower case, BIRD 2 capitalised.
_HEADINGS = ["name", "proto", "table", "state", "since", "info"]
_TABLE_HEADING, _TABLE_ROW, _END = "2002", "1002", "0000"


class UnexpectedOutput(Exception):
    """BIRD's answer to `show protocols` is not the table calicoctl reads."""


@dataclass(frozen=True)
class BgpSession:
    address: str  # as calicoctl shows it: `_` back to `.` (IPv4) or `:` (IPv6)
    peer_type: str  # node-to-node mesh, node specific, global
    state: str  # BIRD's protocol state: up, start, stop, down, flush
    since: str
    info: str  # the BGP state (Established, Active, ...) and the last error
    version: int

    @property
    def established(self) -> bool:
        return self.info.split(" ", 1)[0] == ESTABLISHED


def sessions(control_socket: str) -> list[BgpSession]:
    """This node's BGP sessions, from the BIRD on control_socket
    (control.ControlError when none answers there)."""
    return parse_protocols(command(control_socket, "show protocols"))


def parse_protocols(reply: list[tuple[str, str]]) -> list[BgpSession]:
    """[(code, line)] of `show protocols` -> the sessions; calicoctl's
    errors (UnexpectedOutput) for anything but its table."""
    found = []
    for code, text in reply:
        if code == _TABLE_HEADING:
            if text.lower().split() != _HEADINGS:
                raise UnexpectedOutput("unknown BIRD table output format")
        elif code == _TABLE_ROW:
            session = _session(text)
            if session is not None:
                found.append(session)
        elif code != _END:
            raise UnexpectedOutput("unexpected output line from BIRD")
    return found


def _session(row: str) -> BgpSession | None:
    columns = row.split()
    if len(columns) < 6 or columns[1] != "BGP":
        return None
    match = _NAME.match(columns[0])
    if match is None:
        return None
    kind, address = match.groups()
    version = 4 if _IPV4.match(_PORT.sub("", address)) else 6
    return BgpSession(address=address.replace("_", "." if version == 4 else ":"),
                      peer_type=PEER_TYPES[kind], state=columns[3], since=columns[4],
                      info=" ".join(columns[5:]), version=version)
