"""`calico-libnetwork pool create|list|delete`: Calico IP pools, through
ipam.pools (calicoctl's validation, defaults, overlap refusal and delete)."""

import argparse
from contextlib import closing

from netaddr import AddrFormatError, IPNetwork

from datastore.resources import Resources
from datastore.settings import connect
from ipam import pools
from plugin.cli.get import show
from plugin.cli.manifests_v1 import cidr_to_name
from plugin.cli.output import Outcome, add_output_option, outcomes
from plugin.cli.resource_manager import ResourceManager


def register(commands) -> None:
    pool = commands.add_parser("pool", help="create, list and delete Calico IP pools")
    sub = pool.add_subparsers(dest="pool_command", metavar="COMMAND", required=True)

    create = sub.add_parser("create", help="create an IP pool")
    create.add_argument("cidr", metavar="CIDR", type=_cidr, help="e.g. 10.77.0.0/16")
    create.add_argument("--name", help="pool name (default: from the CIDR, "
                                       "e.g. pool-10-77-0-0-16)")
    create.add_argument("--block-size", type=int, metavar="B",
                        help="prefix length of the blocks hosts claim (default 26 for "
                             "IPv4, 122 for IPv6)")
    create.add_argument("--nat-outgoing", action="store_true",
                        help="masquerade traffic from containers to outside the pools")
    for encap in ("vxlan", "ipip"):
        create.add_argument(f"--{encap}-mode", choices=pools.ENCAP_MODES, default="Never",
                            help="encapsulation between hosts (default Never)")
    create.add_argument("--disabled", action="store_true",
                        help="create it disabled: no new addresses are taken from it")
    create.add_argument("--node-selector", default="all()", metavar="S",
                        help="the nodes that use the pool, e.g. \"zone == 'a'\" "
                             "(default all())")
    add_output_option(create, "json")
    create.set_defaults(func=run_create)

    listing = sub.add_parser("list", help="list IP pools")
    add_output_option(listing, "wide", "yaml", "json")
    listing.set_defaults(func=run_list)

    delete = sub.add_parser("delete", help="delete an IP pool (refused while addresses "
                                           "are allocated from it)")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--force", action="store_true",
                        help="delete even with allocated addresses; they stay allocated, "
                             "outside any pool, until released")
    add_output_option(delete, "json")
    delete.set_defaults(func=run_delete)


def _cidr(text: str) -> IPNetwork:
    try:
        return IPNetwork(text).cidr
    except (AddrFormatError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR such as 10.77.0.0/16") \
            from None


def run_create(args, config) -> int:
    pool = pools.build_pool(
        args.name or "pool-" + cidr_to_name(args.cidr), str(args.cidr),
        ipip_mode=args.ipip_mode, vxlan_mode=args.vxlan_mode,
        nat_outgoing=args.nat_outgoing, disabled=args.disabled,
        block_size=args.block_size, node_selector=args.node_selector)
    with closing(connect(config.etcd)) as etcd:
        created = pools.create_pool(Resources(etcd), pool)
    outcomes([Outcome.of("created", created.to_resource())], args.output)
    return 0


def run_list(args, config) -> int:
    with closing(connect(config.etcd)) as etcd:
        found = ResourceManager(Resources(etcd)).list("IPPool")
    show("IPPool", found, args.output)
    return 0


def run_delete(args, config) -> int:
    with closing(connect(config.etcd)) as etcd:
        deleted = pools.delete_pool(Resources(etcd), args.name, force=args.force)
    outcomes([Outcome.of("deleted", deleted.to_resource())], args.output)
    return 0
