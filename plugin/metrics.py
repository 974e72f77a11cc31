"""How `run` serves one metrics port for all its processes
(CALICO_LIBNETWORK_PROMETHEUS_PORT).

`run` binds the port before it touches anything (a taken port stops the
start), and empties a directory for the gunicorn workers, which count in
prometheus_client's multiprocess files there: workers are forked and
replaced by gunicorn, and the files keep the counts of a replaced one.
The agent serves the port (agent/metrics.py says why) from the socket
`run` hands it, reading those files at each scrape; with --no-agent, `run`
serves them itself.
"""

import os
import shutil

from prometheus_client import CollectorRegistry

from agent.settings import AgentSettings
from metrics import exposition
from plugin.calls import CALLS
from plugin.agent_process import METRICS_FD_FLAG, PLUGIN_METRICS_FLAG

# Docker's calls, counted from 0 (Plugin.Activate is answered by the app, not counted).
CALL_NAMES = tuple(CALLS)


def plugin_directory(settings: AgentSettings) -> str:
    return f"{settings.run_dir}/metrics-{settings.nodename}"


class NodeMetrics:
    """The bound port and the workers' empty directory."""

    def __init__(self, port: int, settings: AgentSettings):
        self.socket = exposition.listen(port)
        self.directory = plugin_directory(settings)
        # Files of an earlier run would add its counts to ours.
        shutil.rmtree(self.directory, ignore_errors=True)
        os.makedirs(self.directory, mode=0o700)
        self._server = None

    def agent_args(self) -> list[str]:
        return [METRICS_FD_FLAG, str(self.socket.fileno()), PLUGIN_METRICS_FLAG, self.directory]

    def pass_fds(self) -> tuple[int, ...]:
        return (self.socket.fileno(),)

    def serve_here(self) -> None:
        """--no-agent: `run` serves the workers' counts and its own process_*."""
        self._server = exposition.serve_node(self.socket, CollectorRegistry(auto_describe=False),
                                             self.directory)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self.socket.close()


def prepare(config) -> NodeMetrics | None:
    """None when the variable is unset; PortUnavailable when the port is taken."""
    if config.prometheus_port is None:
        return None
    return NodeMetrics(config.prometheus_port, config.agent)
