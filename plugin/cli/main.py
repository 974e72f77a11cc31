"""calico-libnetwork: the command line."""

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from datastore.errors import DatastoreUnavailable, EtcdTlsError
from ipam.errors import IpamError
from plugin import metrics, server, startup
from plugin.agent_process import AGENT_ARGV, AgentProcess
from plugin.cli import (agent_command, apply, check, delete, get, ipam_gc, ipam_show,
                        node_status, pool, status)
from plugin.cli.command import execute
from plugin.cli.errors import CommandError
from plugin.config import DEFAULT_PLUGIN_DIR, Config

LOG = logging.getLogger(__name__)
# Expected failures: a message for the user, exit 1, no traceback.
USER_ERRORS = (*agent_command.USER_ERRORS, IpamError, CommandError, server.AlreadyServed,
               startup.StartupError)


def _version() -> str:
    try:
        return version("calico-libnetwork")
    except PackageNotFoundError:
        return "unknown"


def cmd_run(args, config: Config) -> int:
    # A managed plugin (docker plugin create) serves the one socket its
    # config.json names.  A second instance stops here, before it touches
    # the host or starts an agent.
    paths = server.socket_paths(args.plugin_dir, args.socket or server.SOCKETS)
    server.claim_sockets(paths)
    node_metrics = metrics.prepare(config)  # a taken port stops the start here
    try:
        return _run(args, config, paths, node_metrics)
    finally:
        if node_metrics is not None:
            node_metrics.close()


def _run(args, config: Config, paths, node_metrics: metrics.NodeMetrics | None) -> int:
    etcd_answers = _prepare_datastore(config)
    startup.prepare_kernel(config)
    if etcd_answers:
        startup.prepare_endpoints(config)
    metrics_dir = node_metrics and node_metrics.directory
    if args.no_agent:
        if node_metrics is not None:
            node_metrics.serve_here()
        server.serve(config, paths, complete_start=not etcd_answers, metrics_dir=metrics_dir)
        return 0
    # Registering here, not in the agent, makes a node name or address clash
    # stop the start with its message; the first agent is told it is done.
    # An agent alone, restarted after a crash (the Node may have been
    # deleted meanwhile), or started while etcd does not answer, registers
    # and checks ClusterInformation itself, waiting for etcd as long as it
    # takes (agent/main.py _register).  --no-agent registers no Node: no
    # agent keeps it alive or routes to it.
    if etcd_answers:
        startup.register_node(config)
    agent = AgentProcess(AGENT_ARGV + (node_metrics.agent_args() if node_metrics else []),
                         registered=etcd_answers,
                         pass_fds=node_metrics.pass_fds() if node_metrics else ())
    with agent:
        server.serve(config, paths, complete_start=not etcd_answers, metrics_dir=metrics_dir)
    return 0


def _prepare_datastore(config: Config) -> bool:
    """startup.prepare_datastore; False when etcd does not answer.  The
    plugin then serves without it, and completes its start when etcd
    answers: dockerd enables its plugins before it serves its API (at boot,
    after a restart) and gives up on one whose socket does not answer in
    time (moby#32815), and never enables it again by itself.  A TLS
    setting etcd refuses still stops the start: no wait mends it."""
    try:
        startup.prepare_datastore(config)
    except EtcdTlsError:
        raise
    except DatastoreUnavailable as exc:
        LOG.warning("serving without etcd for now: %s", exc)
        return False
    return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calico-libnetwork",
        description="Docker network and IPAM plugin for Calico (etcd v3 datastore).")
    p.add_argument("-v", "--version", action="version", version=f"calico-libnetwork {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="serve the plugin sockets for dockerd")
    run.add_argument("--plugin-dir", default=DEFAULT_PLUGIN_DIR,
                     help="directory for calico.sock and calico-ipam.sock "
                          f"(default {DEFAULT_PLUGIN_DIR})")
    run.add_argument("--socket", action="append", metavar="NAME",
                     help="serve only this socket file name (repeatable; a managed "
                          "plugin serves the one its config.json names)")
    run.add_argument("--no-agent", action="store_true",
                     help="do not run the node agent (routes between hosts, NAT outgoing)")
    run.set_defaults(func=cmd_run)
    agent = sub.add_parser("agent", help=agent_command.HELP)
    agent_command.add_arguments(agent)
    agent.set_defaults(func=agent_command.cmd_agent)
    pool.register(sub)
    apply.register(sub)
    get.register(sub)
    delete.register(sub)
    status.register(sub)
    check.register(sub)
    node_status.register(sub)
    ipam = sub.add_parser("ipam", help="show and clean up IP address allocations")
    ipam_commands = ipam.add_subparsers(dest="ipam_command", metavar="COMMAND", required=True)
    ipam_show.register(ipam_commands)
    ipam_gc.register(ipam_commands)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return execute(args.command, args.func, args, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
