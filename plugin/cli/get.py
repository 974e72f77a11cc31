"""`calico-libnetwork get KIND [NAME]`: resources as calicoctl get shows them."""

from contextlib import closing

from datastore.resources import API_VERSION, Resource, Resources
from datastore.settings import connect
from plugin.cli.columns import table_of
from plugin.cli.errors import CommandError
from plugin.cli.kinds import DEFAULT_NAMESPACE, kind_of, namespaced, shown
from plugin.cli.output import add_output_option, structured, table
from plugin.cli.resource_manager import ResourceManager


def register(commands) -> None:
    p = commands.add_parser("get", help="show resources (as calicoctl get)")
    p.add_argument("kind", metavar="KIND",
                   help="ippools, nodes, workloadendpoints, profiles, globalnetworkpolicies, "
                        "clusterinformations, felixconfigurations, bgpconfigurations, "
                        "bgppeers (or calicoctl's aliases)")
    p.add_argument("name", nargs="?", metavar="NAME", help="one resource (default: all)")
    add_output_option(p, "wide", "yaml", "json")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace",
                       help=f"namespace of workload endpoints (default {DEFAULT_NAMESPACE})")
    where.add_argument("-a", "--all-namespaces", action="store_true",
                       help="workload endpoints of every namespace")
    p.set_defaults(func=run)


def run(args, config) -> int:
    kind = kind_of(args.kind)
    namespace = None
    if namespaced(kind) and not args.all_namespaces:
        namespace = args.namespace or DEFAULT_NAMESPACE
    if args.name and args.all_namespaces:
        raise CommandError("a NAME is looked up in one namespace: use -n NAMESPACE instead "
                           "of --all-namespaces")
    with closing(connect(config.etcd)) as etcd:
        manager = ResourceManager(Resources(etcd))
        if args.name:
            objects = [manager.get(kind, args.name, namespace)]
        else:
            objects = manager.list(kind, namespace)
    show(kind, objects, args.output, single=bool(args.name),
         with_namespace=namespaced(kind) and args.all_namespaces)
    return 0


def show(kind: str, objects: list[Resource], output: str | None, single: bool = False,
         with_namespace: bool = False) -> None:
    objects = [shown(res) for res in objects]
    if output in ("yaml", "json"):
        items = [res.to_dict(with_revision=True) for res in objects]
        structured(items[0] if single else {"kind": f"{kind}List", "apiVersion": API_VERSION,
                                            "metadata": {}, "items": items}, output)
    else:
        table(*table_of(kind, objects, output == "wide", with_namespace))
