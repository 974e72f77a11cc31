"""`calico-libnetwork ipam gc`: find, and with --apply release, addresses this
plugin allocated that no workload endpoint uses, e.g. when dockerd or the
plugin died between RequestAddress and CreateEndpoint, on any node.

Only handles this plugin makes ("libnetwork.<hex>", attrs type "libnetwork")
are candidates, and a handle only when every address it holds is unused and
older than the grace period: tunnel addresses, CNI's and other components'
allocations are never touched.
"""

import datetime
from contextlib import closing
from typing import NamedTuple

from netaddr import IPAddress

from datastore.resources import Resources
from datastore.settings import connect
from driver import endpoints as ep
from ipam.allocator import Ipam
from ipam.driver import ALLOCATION_TYPE, HANDLE_ID_PREFIX
from ipam.store import BlockStore
from plugin.cli.errors import CommandError
from plugin.cli.output import add_output_option, as_json, table

DEFAULT_GRACE = 300.0


class Leak(NamedTuple):
    address: str
    handle: str
    node: str | None
    endpoint_name: str | None
    age: int  # seconds since the address was allocated


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
    return leaks(blocks, endpoint_addresses(resources.list("WorkloadEndpoint")), grace)


def leaks(blocks, used: set[IPAddress], grace: float) -> list[Leak]:
    """The addresses of `blocks` ((key, block, revision) as BlockStore.blocks
    lists them) this plugin allocated, older than grace, whose handle holds
    none of `used`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    by_handle = {}
    for _, block, _ in blocks:
        for ordinal, index in enumerate(block.allocations):
            if index is not None:
                ip = block.ip(ordinal)
                handle, attrs = block.allocation(ip)
                if handle and handle.startswith(HANDLE_ID_PREFIX):
                    by_handle.setdefault(handle, []).append((ip, attrs))
    found = []
    for handle, allocations in by_handle.items():
        leaked = [_leak(ip, handle, attrs, used, grace, now) for ip, attrs in allocations]
        if all(leaked):  # release_by_handle frees all of a handle's addresses
            found += leaked
    return sorted(found, key=lambda leak: IPAddress(leak.address).sort_key())


def _leak(ip, handle, attrs, used, grace, now) -> Leak | None:
    age = _age(attrs.get("timestamp"), now)
    if attrs.get("type") != ALLOCATION_TYPE or ip in used or age is None or age < grace:
        return None
    return Leak(str(ip), handle, attrs.get("node"), attrs.get("endpoint-name"), int(age))


def _age(timestamp, now) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(str(timestamp))
    except ValueError:
        return None  # unknown age: never old enough
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return (now - when).total_seconds()


def endpoint_addresses(weps) -> set[IPAddress]:
    """The addresses the WorkloadEndpoints list (every namespace's)."""
    return {a for wep in weps for a in ep.addresses(wep.spec.get("ipNetworks"))}
