"""The names responder's health as the watchdog last saw it: while it does
not answer, containers' questions go straight to their nameservers, and
the names of other hosts' containers do not resolve."""

import time

from agent.names.health import responder_health
from plugin.audit.findings import Finding, advised
from plugin.audit.layers import Layers
from plugin.audit.tools import Tools

NEEDS = ()  # the watchdog's file only


def check(_layers: Layers, tools: Tools, _grace) -> list[Finding]:
    if tools.agent is None or not tools.agent.names:
        return []
    health = responder_health(tools.agent.names_health_path)
    if health.get("error"):
        return [advised("responder-unknown", f"the names watchdog's file is unreadable: "
                        f"{health['error']}", "restart the plugin")]
    if health.get("answering") is False:
        since = health.get("since")
        for_how_long = f" for {time.time() - since:.0f} s" if since else ""
        return [advised("responder-not-answering",
                        f"the names responder has not answered{for_how_long}: containers ask "
                        "their nameservers directly and other hosts' containers' names do not "
                        "resolve", "look at the agent's log; a stuck agent is restarted by "
                        "restarting the plugin")]
    return []
