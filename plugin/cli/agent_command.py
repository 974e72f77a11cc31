"""`calico-libnetwork agent`: the node agent alone (`run` starts it too).

The agent lives as long as its host, so its process is started from
entry.py with this module alone, not the whole command line: it imports
neither the plugin's web server nor the Docker client (16 MB and 0.15 s of
start-up less)."""

import argparse
import socket

from agent.errors import AgentError
from agent.main import run_agent
from datastore.errors import DatastoreError
from kernel.errors import KernelError
from metrics import exposition
from plugin.agent_process import METRICS_FD_FLAG, PLUGIN_METRICS_FLAG, REGISTERED_FLAG
from plugin.cli.command import execute
from plugin.config import Config

HELP = "run only the node agent (run starts it itself)"
USER_ERRORS = (AgentError, DatastoreError, KernelError, exposition.PortUnavailable)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Only from `run`, for the agent it starts first, right after registering.
    p.add_argument(REGISTERED_FLAG, action="store_true", help=argparse.SUPPRESS)
    # Only from `run`: the metrics socket it bound, and its workers' metrics files.
    p.add_argument(METRICS_FD_FLAG, type=int, help=argparse.SUPPRESS)
    p.add_argument(PLUGIN_METRICS_FLAG, help=argparse.SUPPRESS)


def cmd_agent(args, config: Config) -> int:
    if args.metrics_fd is not None:  # from `run`, which bound the port
        metrics_socket = socket.socket(fileno=args.metrics_fd)
    elif config.prometheus_port is not None:  # an agent alone binds it itself
        metrics_socket = exposition.listen(config.prometheus_port)
    else:
        metrics_socket = None
    run_agent(config.agent, registered=args.registered, metrics_socket=metrics_socket,
              plugin_metrics=args.plugin_metrics)
    return 0


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="calico-libnetwork agent", description=HELP)
    add_arguments(p)
    return execute("agent", cmd_agent, p.parse_args(argv), USER_ERRORS)
