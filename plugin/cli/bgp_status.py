"""The BGP line of `status`: whether this node runs BIRD, and how many of its
BGP sessions are Established.

What the agent runs wins over this command's environment: its BIRD status
file (agent/bgp/daemon.py: backend, and bird running / restarting / not
started with the reason / off) says which backend it was started with.
The sessions come from BIRD's control socket, as `node status` reads them.
A BIRD that should run and does not answer is a problem (exit 1); one kept
from starting by another BIRD (calico/node's) is only shown, since that
BIRD routes the host then.
"""

from agent import status as agent_status
from agent.bgp.control import ControlError
from agent.bgp.daemon import BirdPaths
from agent.bgp.sessions import UnexpectedOutput, sessions

BIRD_BACKEND = "bird"
_SHOULD_ANSWER = ("running", "restarting")
_NO_FILE = "unknown"  # agent.status.bgp_status: no agent wrote its BIRD's state here


def bgp_status(agent) -> dict:
    """{"backend", "bird" (the agent's word for BIRD's state), "reason",
    "pid", "log", "sessions", "established", "error"}, the keys that apply."""
    paths = BirdPaths(agent.run_dir)
    status = agent_status.bgp_status(agent)
    if status.get("bird") == _NO_FILE:  # no agent wrote one: this command's setting
        status = {"backend": agent.networking_backend, "bird": None}
    if status.get("backend") != BIRD_BACKEND:
        return {"backend": status.get("backend"), "bird": "off"}
    status["log"] = paths.log
    try:
        found = sessions(paths.socket)
    except (ControlError, UnexpectedOutput) as exc:
        if status["bird"] in _SHOULD_ANSWER:
            status["error"] = str(exc)
        return status
    status.update(sessions=len(found), established=sum(s.established for s in found))
    return status


def line(status: dict) -> str:
    bird = status.get("bird")
    if bird == "off":
        return f"off (CALICO_NETWORKING_BACKEND={status['backend']})"
    if "sessions" in status:
        pid = f" (pid {status['pid']})" if status.get("pid") else ""
        return (f"BIRD running{pid}, {status['established']} of {status['sessions']} "
                "sessions Established (`calico-libnetwork node status`)")
    if "error" in status:
        return f"BIRD not answering ({status['error']})"
    if bird is None:
        return "BIRD not started yet (is the node agent running?)"
    reason = f": {status['reason']}" if status.get("reason") else ""
    return f"BIRD {bird}{reason}"


def problem(status: dict) -> str | None:
    """Why BGP makes this node unhealthy, or None."""
    if "error" not in status:
        return None
    return f"BIRD does not answer ({status['error']}); see {status['log']}"
