"""calico-libnetwork: the command line."""

import argparse
import logging
import socket
import sys
from importlib.metadata import PackageNotFoundError, version

from agent.errors import AgentError
from agent.main import run_agent
from datastore.errors import DatastoreError, DatastoreUnavailable, EtcdTlsError
from ipam.errors import IpamError
from kernel.errors import KernelError
from metrics import exposition
from plugin import metrics, server, startup
from plugin.agent_process import AGENT_ARGV, REGISTERED_FLAG, AgentProcess
from plugin.cli import apply, check, delete, get, ipam_gc, ipam_show, pool, status
from plugin.cli.errors import CommandError
from plugin.config import DEFAULT_PLUGIN_DIR, Config, ConfigError

LOG = logging.getLogger(__name__)
# Expected failures: a message for the user, exit 1, no traceback.
USER_ERRORS = (DatastoreError, IpamError, CommandError, AgentError, KernelError,
               server.AlreadyServed, startup.StartupError, exposition.PortUnavailable)


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
    agent = sub.add_parser("agent", help="run only the node agent (run starts it itself)")
    # Only from `run`, for the agent it starts first, right after registering.
    agent.add_argument(REGISTERED_FLAG, action="store_true", help=argparse.SUPPRESS)
    # Only from `run`: the metrics socket it bound, and its workers' metrics files.
    agent.add_argument(metrics.METRICS_FD_FLAG, type=int, help=argparse.SUPPRESS)
    agent.add_argument(metrics.PLUGIN_METRICS_FLAG, help=argparse.SUPPRESS)
    agent.set_defaults(func=cmd_agent)
    pool.register(sub)
    apply.register(sub)
    get.register(sub)
    delete.register(sub)
    status.register(sub)
    check.register(sub)
    ipam = sub.add_parser("ipam", help="show and clean up IP address allocations")
    ipam_commands = ipam.add_subparsers(dest="ipam_command", metavar="COMMAND", required=True)
    ipam_show.register(ipam_commands)
    ipam_gc.register(ipam_commands)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"calico-libnetwork: configuration error: {exc}", file=sys.stderr)
        return 2
    # The daemon logs its work; the operating commands print only their answer.
    quiet = logging.INFO if args.command in ("run", "agent") else logging.WARNING
    logging.basicConfig(level=logging.DEBUG if config.debug else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args, config)
    except USER_ERRORS as exc:
        print(f"calico-libnetwork: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
