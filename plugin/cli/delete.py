"""`calico-libnetwork delete -f FILE | KIND NAME`: remove resources (IP pools
as calicoctl does: refused while addresses are allocated from them)."""

from contextlib import closing

from datastore.resources import Resources
from datastore.settings import connect
from plugin.cli.errors import CommandError
from plugin.cli.kinds import DEFAULT_NAMESPACE, kind_of, namespaced
from plugin.cli.manifests import load
from plugin.cli.output import add_output_option, outcomes_of
from plugin.cli.resource_manager import ResourceManager


def register(commands) -> None:
    p = commands.add_parser("delete", help="delete the resources in a file, or one by "
                                           "KIND NAME (as calicoctl delete)")
    p.add_argument("kind", nargs="?", metavar="KIND", help="e.g. ippool, profile, node")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-f", "--filename", metavar="FILE", help="YAML or JSON manifest; - reads stdin")
    p.add_argument("-n", "--namespace",
                   help=f"namespace of workload endpoints (default {DEFAULT_NAMESPACE})")
    add_output_option(p, "json")
    p.set_defaults(func=run)


def run(args, config) -> int:
    if bool(args.filename) == bool(args.kind) or (args.kind and not args.name):
        raise CommandError("give either -f FILE or KIND NAME, e.g. "
                           "`calico-libnetwork delete profile net1`")
    if args.filename:
        targets = [(r.kind, r.name, r.namespace) for r in load(args.filename, args.namespace)]
    else:
        kind = kind_of(args.kind)
        namespace = (args.namespace or DEFAULT_NAMESPACE) if namespaced(kind) else None
        targets = [(kind, args.name, namespace)]
    with closing(connect(config.etcd)) as etcd:
        manager = ResourceManager(Resources(etcd))
        outcomes_of(lambda target: manager.delete(*target), targets, args.output)
    return 0
