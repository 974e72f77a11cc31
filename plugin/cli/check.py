"""`calico-libnetwork check [--repair] [-o json]`: compare, for this node,
what dockerd holds, the WorkloadEndpoints, IPAM, the kernel and the Node
record with each other (plugin/audit/), one line per finding.  Exit 0 when
all agree (or --repair mended every finding), 1 when not, or when a layer
could not be read (the rest is still compared).  check alone changes
nothing; --repair mends what it can prove safe."""

from contextlib import closing

from datastore.errors import DatastoreError
from datastore.resources import Resources
from datastore.settings import connect
from driver.docker_api import DockerApi
from plugin import audit
from plugin.audit import layers as audit_layers
from plugin.audit.tools import Tools
from plugin.cli import ipam_gc
from plugin.cli.output import add_output_option, as_json

DOCKER_TIMEOUT = 3.0


def register(commands) -> None:
    p = commands.add_parser("check", help="compare dockerd, etcd and the kernel for this node; "
                                          "exit 1 when they disagree (--repair mends what is "
                                          "safe)")
    p.add_argument("--repair", action="store_true",
                   help="mend what is provably safe; name what is not with the command to run")
    ipam_gc.add_grace_option(p, "endpoints, addresses and profiles", "starting")
    add_output_option(p, "json")
    p.set_defaults(func=run)


def run(args, config) -> int:
    seconds = ipam_gc.grace(args)
    docker = DockerApi(config.driver.docker_host, timeout=DOCKER_TIMEOUT)
    with closing(connect(config.etcd)) as etcd:
        resources, etcd_error = Resources(etcd), None
        try:
            etcd.revision()
        except DatastoreError as exc:
            resources, etcd_error = None, str(exc)
        layers = audit_layers.read(config.nodename, resources, docker, etcd_error)
        tools = Tools(config.nodename, resources, docker, config.driver.create_profiles,
                      config.driver.label_endpoints, config.agent)
        findings = audit.audit(layers, tools, audit.Grace(seconds))
        if args.repair:
            audit.repair(findings)
    left = [f for f in findings if not f.repaired]
    if args.output == "json":
        as_json({"node": config.nodename, "unread": layers.unread,
                 "findings": [f.to_dict() for f in findings], "clean": not left,
                 "repaired": args.repair})
    else:
        _print(layers, findings, left, args.repair)
    return 0 if not left and not layers.unread else 1


def _print(layers, findings, left, repairing: bool) -> None:
    for layer, why in layers.unread.items():
        print(f"could not read {layer}: {why}; compared the other layers")
    for finding in findings:
        print(finding.line())
    if not findings:
        print(f"node {layers.node}: dockerd, etcd and the kernel agree" if not layers.unread
              else f"node {layers.node}: the layers read agree")
    elif left and not repairing and any(f.act for f in left):
        print("run `calico-libnetwork check --repair` to mend what it can")
