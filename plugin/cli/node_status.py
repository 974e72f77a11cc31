"""`calico-libnetwork node status`: this node's BGP sessions, printed as
`calicoctl node status` prints them (calicoctl/commands/node/status.go).

calicoctl looks for Felix among the processes; the process that does
Felix's work here is our node agent, looked for in this network namespace
(several lab hosts share one machine).  It asks BIRD 1.6's two daemons; our
one BIRD 2 answers for both families on the node's control socket.  Unlike
calicoctl, a BIRD that does not answer is an exit status of 1: the command
is a BGP health check."""

import os
import sys

from agent.bgp.control import ControlError
from agent.bgp.daemon import BirdPaths
from agent.bgp.sessions import BgpSession, UnexpectedOutput, sessions
from kernel.processes import in_this_netns
from plugin.cli import bgp_status
from plugin.cli.bordered_table import render

HEADERS = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"]
_AGENT_COMMAND = "agent"
# How the agent is started: by `run` (plugin/agent_process.py), or alone
# as `calico-libnetwork agent`.
_AGENT_LAUNCHERS = ("plugin.cli", "calico-libnetwork")


def register(commands) -> None:
    node = commands.add_parser("node", help="this node's BGP daemon (as calicoctl node)")
    node_commands = node.add_subparsers(dest="node_command", metavar="COMMAND", required=True)
    p = node_commands.add_parser("status", help="the BGP sessions of this node's BIRD "
                                                "(as calicoctl node status); exit 1 when the "
                                                "node agent or BIRD is not running")
    p.set_defaults(func=run)


def run(args, config) -> int:
    if os.geteuid() != 0:  # BIRD's socket and other processes' namespaces
        print("Need super user privileges: Operation not permitted")
        return 1
    if not agent_running():
        print("Calico process is not running.", file=sys.stderr)
        return 1
    print("Calico process is running.")
    try:
        found = sessions(BirdPaths(config.agent.run_dir).socket)
    except ControlError:
        print("\nThe BGP backend process (BIRD) is not running.\n")
        # calicoctl's stdout stays as it is; why goes to stderr.
        why = bgp_status.line(bgp_status.bgp_status(config.agent))
        print(f"calico-libnetwork: BGP: {why}", file=sys.stderr)
        return 1
    except UnexpectedOutput as exc:
        print(f"Error executing command: {exc}", file=sys.stderr)
        return 1
    for version in (4, 6):
        print(f"\nIPv{version} BGP status")
        print(peers_table([s for s in found if s.version == version], version), end="")
    print()
    return 0


def peers_table(found: list[BgpSession], version: int) -> str:
    if not found:
        return f"No IPv{version} peers found.\n"
    return render(HEADERS, [[s.address, s.peer_type, s.state, s.since, s.info] for s in found])


def agent_running() -> bool:
    """Whether a node agent runs in this network namespace."""
    return any(_is_agent(argv) for _, argv in in_this_netns())


def _is_agent(argv: list[str]) -> bool:
    return any(word == _AGENT_COMMAND and os.path.basename(argv[i - 1]) in _AGENT_LAUNCHERS
               for i, word in enumerate(argv) if i > 0)

