"""`calico-libnetwork apply|create -f FILE`: store the resources of a manifest
(calicoctl v3 YAML or JSON, or calicoctl v1 ipPool/profile)."""

from contextlib import closing

from datastore.resources import Resources
from datastore.settings import connect
from plugin.cli.kinds import DEFAULT_NAMESPACE
from plugin.cli.manifests import load
from plugin.cli.output import add_output_option, outcomes_of
from plugin.cli.resource_manager import ResourceManager, checked

_HELP = {"apply": "create or update the resources in a file (as calicoctl apply)",
         "create": "create the resources in a file; refused if one exists (as calicoctl "
                   "create)"}


def register(commands) -> None:
    for name, text in _HELP.items():
        p = commands.add_parser(name, help=text)
        p.add_argument("-f", "--filename", required=True, metavar="FILE",
                       help="YAML or JSON manifest; - reads stdin")
        p.add_argument("-n", "--namespace",
                       help="namespace of workload endpoints that name none "
                            f"(default {DEFAULT_NAMESPACE})")
        add_output_option(p, "json")
        p.set_defaults(func=run)


def run(args, config) -> int:
    # All parsed and checked before anything is written.
    objects = checked(load(args.filename, args.namespace))
    with closing(connect(config.etcd)) as etcd:
        manager = ResourceManager(Resources(etcd))
        act = manager.apply if args.command == "apply" else manager.create
        outcomes_of(act, objects, args.output)
    return 0
