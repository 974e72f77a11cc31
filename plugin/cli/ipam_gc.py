"""`calico-libnetwork ipam gc`: find, and with --apply release, addresses this
plugin allocated that no workload endpoint uses, e.g. when dockerd or the
plugin died between RequestAddress and CreateEndpoint, on any node (which
addresses count: ipam/leaks.py).
"""

from contextlib import closing

from datastore.resources import Resources
from datastore.settings import connect
from driver import endpoints as ep
from ipam.allocator import Ipam
from ipam.leaks import Leak, leaked
from ipam.store import BlockStore
from plugin.cli.errors import CommandError
from plugin.cli.output import add_output_option, as_json, table

DEFAULT_GRACE = 300.0


def register(ipam_commands) -> None:
    p = ipam_commands.add_parser("gc", help="find addresses this plugin allocated that no "
                                            "workload endpoint uses (--apply releases them)")
    p.add_argument("--apply", action="store_true", help="release them (default: only report)")
    add_grace_option(p, "addresses", "between getting its address and its endpoint")
    add_output_option(p, "json")
    p.set_defaults(func=run)


def add_grace_option(parser, what: str, why: str) -> None:
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, metavar="SECONDS",
                        help=f"leave younger {what} alone: a container may be {why} "
                             f"(default {DEFAULT_GRACE:.0f})")


def grace(args) -> float:
    """--grace, checked."""
    if args.grace < 0:
        raise CommandError("--grace must be 0 or more seconds")
    return args.grace


def run(args, config) -> int:
    seconds = grace(args)
    with closing(connect(config.etcd)) as etcd:
        ipam = Ipam(etcd, config.nodename)
        leaks = find_leaks(ipam.store, Resources(etcd), seconds)
        if args.apply:
            for handle in sorted({leak.handle for leak in leaks}):
                ipam.release_by_handle(handle)
    if args.output == "json":
        as_json({"leaked": [{"address": leak.address, "handle": leak.handle, "node": leak.node,
                             "endpointName": leak.endpoint_name, "ageSeconds": leak.age}
                            for leak in leaks],
                 "released": args.apply})
    elif leaks:
        table(["ADDRESS", "NODE", "CONTAINER", "HANDLE", "AGE"],
              [[leak.address, leak.node, leak.endpoint_name, leak.handle, f"{leak.age}s"]
               for leak in leaks])
        print(f"released {len(leaks)} address(es)" if args.apply
              else "run `calico-libnetwork ipam gc --apply` to release them")
    else:
        print(f"no leaked addresses (older than {args.grace:.0f}s)")
    return 0


def find_leaks(store: BlockStore, resources: Resources, grace: float) -> list[Leak]:
    # Blocks before endpoints: an endpoint created in between is then seen.
    blocks = store.blocks()
    return leaked(blocks, ep.endpoint_addresses(resources.list("WorkloadEndpoint")), grace)
