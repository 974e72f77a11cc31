"""`calico-libnetwork ipam show`: pools -> blocks -> addresses in use, and
the utilisation per pool and per node and IP version (a block counts for the
node it is affine to), like `calicoctl ipam show --show-blocks`."""

from contextlib import closing

from ipam.allocator import Ipam, PoolUsage
from plugin.cli.output import add_output_option, as_json, table
from datastore.settings import connect

NO_POOL = "(no pool)"  # blocks left behind by a force-deleted pool
NO_NODE = "(none)"


def register(ipam_commands) -> None:
    p = ipam_commands.add_parser("show", help="IP pools, their blocks and how full they are")
    add_output_option(p, "json")
    p.set_defaults(func=run)


def run(args, config) -> int:
    with closing(connect(config.etcd)) as etcd:
        report = _report(Ipam(etcd, config.nodename).usage())
    if args.output == "json":
        as_json(report)
    else:
        _print(report)
    return 0


def _report(usage: list[PoolUsage]) -> dict:
    pools, nodes = [], {}
    for entry in usage:
        blocks = [{"cidr": str(b.cidr), "node": b.host, "inUse": b.in_use, "size": b.size}
                  for b in entry.blocks]
        pools.append({
            "name": entry.pool.name if entry.pool else None,
            "cidr": str(entry.pool.cidr) if entry.pool else None,
            "size": entry.pool.cidr.size if entry.pool else sum(b["size"] for b in blocks),
            "inUse": entry.in_use,
            "blocks": blocks,
        })
        version = entry.blocks[0].cidr.version if entry.blocks else None
        for block in blocks:
            # IPv4 and IPv6 apart: a /122 next to a /26 would hide either's use.
            node = nodes.setdefault((block["node"], version), {
                "node": block["node"], "ipVersion": version, "blocks": 0, "inUse": 0,
                "size": 0})
            node["blocks"] += 1
            node["inUse"] += block["inUse"]
            node["size"] += block["size"]
    return {"pools": pools, "nodes": sorted(nodes.values(),
                                            key=lambda n: (n["node"] or "", n["ipVersion"]))}


def _used(entry: dict) -> str:
    return f"{100 * entry['inUse'] / entry['size']:.1f}%" if entry["size"] else "-"


def _print(report: dict) -> None:
    table(["IP POOL", "CIDR", "IN USE", "SIZE", "USED"],
          [[p["name"] or NO_POOL, p["cidr"], p["inUse"], p["size"], _used(p)]
           for p in report["pools"]])
    blocks = [(p, b) for p in report["pools"] for b in p["blocks"]]
    if blocks:
        print()
        table(["BLOCK", "IP POOL", "NODE", "IN USE", "SIZE", "USED"],
              [[b["cidr"], p["name"] or NO_POOL, b["node"] or NO_NODE, b["inUse"], b["size"],
                _used(b)] for p, b in blocks])
        print()
        table(["NODE", "IP", "BLOCKS", "IN USE", "SIZE", "USED"],
              [[n["node"] or NO_NODE, f"v{n['ipVersion']}", n["blocks"], n["inUse"], n["size"],
                _used(n)] for n in report["nodes"]])
