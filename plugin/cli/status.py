"""`calico-libnetwork status`: this node as the plugin sees it, like
`calicoctl node status`, and a health check: exit 1 when etcd cannot be
reached or a plugin socket does not answer Plugin.Activate as dockerd would.
An etcd that anyone reaching it may write (plain http, or https without
client certificates) is a warning.
A workload endpoint whose cali interface is missing is only a warning: a
restart of the plugin would not bring it back.  Policy enforcement is shown
from the file the node agent writes each time it programs the host."""

import json
import sys
from contextlib import closing

from agent.status import peer_status
from datastore.errors import DatastoreError
from datastore.resources import Resources
from datastore.settings import connect
from driver import dataplane
from kernel.errors import KernelError
from plugin.cli import etcd_security, names_check, probe
from plugin.cli.output import add_output_option, as_json, table
from plugin.config import DEFAULT_PLUGIN_DIR
from plugin.server import SOCKETS, socket_paths

PROBE_TIMEOUT = 2.0
_START_HINT = "start the plugin (`calico-libnetwork run`, or its systemd unit)"


def register(commands) -> None:
    p = commands.add_parser("status", help="this node's status; exit 1 when unhealthy "
                                           "(usable as a health check)")
    p.add_argument("--plugin-dir", default=DEFAULT_PLUGIN_DIR,
                   help=f"where the plugin's sockets are (default {DEFAULT_PLUGIN_DIR})")
    p.add_argument("--socket", action="append", metavar="NAME",
                   help="check only this socket file name (repeatable; a managed plugin "
                        "serves the one its config.json names)")
    add_output_option(p, "json")
    p.set_defaults(func=run)


def run(args, config) -> int:
    report = {"node": {"name": config.nodename},
              "etcd": {"endpoints": list(config.etcd.endpoints), "reachable": False},
              "policy": policy_status(config.agent),
              "names": names_check.names_status(config.agent, config.driver.docker_host)}
    with closing(connect(config.etcd)) as etcd:
        try:
            etcd.revision()
            report["etcd"]["reachable"] = True
            resources = Resources(etcd)
            report["node"].update(_node_addresses(resources, config.nodename))
            report["workloadEndpoints"] = _endpoints(resources, config.nodename)
            report.update(other_nodes(resources, config))
            report["etcd"]["warnings"] = etcd_security.warnings(config.etcd, PROBE_TIMEOUT)
        except DatastoreError as exc:
            report["etcd"]["error"] = str(exc)
    report["sockets"] = [_probe(path)
                         for path in socket_paths(args.plugin_dir, args.socket or SOCKETS)]
    report["problems"] = _problems(report)
    report["warnings"] = [f"workload endpoint {e['name']} has no interface {e['interface']} "
                          "on this host" for e in report.get("workloadEndpoints", [])
                          if not e["interfacePresent"]]
    report["warnings"] += report["etcd"].get("warnings", [])
    if report["names"].get("advice"):
        report["warnings"].append(f"names across hosts: {report['names']['advice']}")
    report["healthy"] = not report["problems"]
    if args.output == "json":
        as_json(report)
    else:
        _print(report)
    for problem in report["problems"]:
        print(f"calico-libnetwork: unhealthy: {problem}", file=sys.stderr)
    return 0 if report["healthy"] else 1


def other_nodes(resources: Resources, config) -> dict:
    """The other nodes, their addresses, and whether this host holds a route
    to each of their blocks (as the node agent programs them)."""
    try:
        return {"peers": peer_status(resources.etcd, config.nodename)}
    except KernelError as exc:
        return {"peers": [], "peersError": str(exc)}


def policy_status(agent) -> dict:
    """What the node agent last programmed (its status file: enabled,
    endpoints, rules, sets, clusterEndpoints, programmed, milliseconds);
    {"enabled": False} when it does not enforce policy (the agent's file
    says so, else this command's CALICO_LIBNETWORK_POLICY), "programmed":
    None before it has."""
    path = agent.policy_status_path
    try:
        with open(path, encoding="utf-8") as f:
            status = json.load(f)
    except FileNotFoundError:
        return {"enabled": True, "programmed": None} if agent.policy else {"enabled": False}
    except (OSError, ValueError) as exc:
        return {"enabled": True, "programmed": None,
                "error": f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"}
    if not isinstance(status, dict):
        return {"enabled": True, "programmed": None, "error": f"{path} is not a policy status"}
    return status


def _policy_line(policy: dict) -> str:
    if not policy.get("enabled"):
        return "off (CALICO_LIBNETWORK_POLICY=false; Felix enforces policy)"
    if "error" in policy:
        return f"unknown ({policy['error']})"
    if not policy.get("programmed"):
        return "not programmed yet (is the node agent running?)"
    line = (f"enforced on {_count(policy.get('endpoints'), 'endpoint')} "
            f"({_count(policy.get('rules'), 'rule')}, {_count(policy.get('sets'), 'set')}), "
            f"last programmed {policy['programmed']} ({policy.get('milliseconds')} ms)")
    to_host = policy.get("defaultEndpointToHostAction")
    if isinstance(to_host, dict):
        line += (f"; workloads to this host: {to_host.get('value')} "
                 f"(from {to_host.get('source')})")
    return line


def _tunnels_line(policy: dict) -> str:
    """The encapsulations in use, accepted from the Calico hosts only."""
    hosts = policy.get("calicoHosts") or {}
    return (f"{', '.join(policy['encapsulation'])} accepted only from the Calico hosts "
            f"({hosts.get('ipv4')} IPv4, {hosts.get('ipv6')} IPv6 addresses)")


def _host_endpoints_line(policy: dict) -> str:
    """This node's host endpoint interfaces, and what they never close."""
    line = ", ".join(policy["hostEndpoints"])
    for direction, failsafe in (policy.get("failsafe") or {}).items():
        ports = ", ".join(failsafe.get("value") or ()) or "none"
        line += f"; failsafe {direction}: {ports} (from {failsafe.get('source')})"
    return line


def _count(n, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _node_addresses(resources: Resources, nodename: str) -> dict:
    node = resources.get("Node", nodename)
    if node is None:
        return {"resource": False}
    bgp = node.spec.get("bgp") or {}
    return {"resource": True, "ipv4Address": bgp.get("ipv4Address"),
            "ipv6Address": bgp.get("ipv6Address")}


def _endpoints(resources: Resources, nodename: str) -> list[dict]:
    found = []
    for wep in resources.list("WorkloadEndpoint"):  # every namespace
        if wep.spec.get("node") == nodename:
            ifname = wep.spec.get("interfaceName")
            found.append({"name": wep.name, "namespace": wep.namespace,
                          "interface": ifname, "interfacePresent": _link_present(ifname)})
    return found


def _link_present(ifname) -> bool:
    try:
        return bool(ifname) and dataplane.link_exists(ifname)
    except KernelError:
        return False  # a name no interface can have


def _probe(path: str) -> dict:
    try:
        return {"path": path, "state": "answering",
                "implements": probe.activate(path, PROBE_TIMEOUT)}
    except FileNotFoundError:
        return {"path": path, "state": "missing"}
    except (OSError, ValueError) as exc:
        return {"path": path, "state": "not answering", "error": str(exc) or type(exc).__name__}


def _problems(report: dict) -> list[str]:
    problems = []
    if not report["etcd"]["reachable"]:
        problems.append(report["etcd"]["error"])
    if names_check.stuck(report["names"]):
        problems.append(f"names across hosts: {names_check.stuck(report['names'])}")
    for sock in report["sockets"]:
        if sock["state"] == "missing":
            problems.append(f"plugin socket {sock['path']} does not exist; {_START_HINT}")
        elif sock["state"] != "answering":
            problems.append(f"plugin socket {sock['path']} does not answer Plugin.Activate "
                            f"({sock['error']}); restart the plugin, or {_START_HINT}")
    return problems


def _print(report: dict) -> None:
    node, etcd = report["node"], report["etcd"]
    addresses = [a for a in (node.get("ipv4Address"), node.get("ipv6Address")) if a]
    if addresses:
        address = ", ".join(addresses)
    elif "resource" in node:
        address = "none" if node["resource"] else f"none (no Node resource {node['name']})"
    else:
        address = "unknown (etcd unreachable)"
    state = "reachable" if etcd["reachable"] else "UNREACHABLE"
    rows = [["Node:", node["name"]], ["Node address:", address],
            ["etcd:", f"{state} at {', '.join(etcd['endpoints'])}"],
            ["Policy:", _policy_line(report["policy"])]]
    if report["policy"].get("guarded"):
        rows.append(["Closed to containers:", ", ".join(report["policy"]["guarded"])])
    if report["policy"].get("hostEndpoints"):
        rows.append(["Host endpoints:", _host_endpoints_line(report["policy"])])
    if report["policy"].get("encapsulation"):
        rows.append(["Tunnels:", _tunnels_line(report["policy"])])
    table(None, rows + [["Names:", names_check.line(report["names"])]])
    print()
    table(["PLUGIN SOCKET", "STATE", "DETAIL"],
          [[s["path"], s["state"], s.get("implements") or s.get("error")]
           for s in report["sockets"]])
    if "workloadEndpoints" in report:
        endpoints = report["workloadEndpoints"]
        print(f"\nWorkload endpoints on this node: {len(endpoints)}")
        if endpoints:
            table(["NAME", "INTERFACE", "INTERFACE PRESENT"],
                  [[e["name"], e["interface"], e["interfacePresent"]] for e in endpoints])
    if "peers" in report:
        print(f"\nOther nodes: {len(report['peers'])}")
        if report["peers"]:
            table(["NODE", "ADDRESS", "IPV6 ADDRESS", "VXLAN VTEP", "ALIVE", "BLOCKS",
                   "ROUTES PROGRAMMED"],
                  [[p["name"], p["ipv4Address"], p.get("ipv6Address") or "-",
                    p["vxlanTunnelAddr"] or "-", p["alive"], len(p["blocks"]),
                    p["routesProgrammed"]] for p in report["peers"]])
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"\nStatus: {'healthy' if report['healthy'] else 'UNHEALTHY'}")
