"""This node's published ports (`docker run -p`) in etcd against the node
agent's table inet calico-libnetwork-ports: a host port forwarded to an
address no container of this node publishes it for (a binding without its
container), or a container's published port the table lacks.  The agent
writes the table whole after each change it reads and at its start, so a
difference means it is not running or the table was edited by hand.  A
difference is reported only when the kernel shows it before and after etcd
is read again (a container starting or going meanwhile is no finding)."""

import re

from agent import nftables
from agent.published import TABLE, UNSPECIFIED, forwards
from datastore.workload_endpoint import WorkloadEndpoint
from driver import endpoints as ep
from kernel.errors import KernelError
from plugin.audit.findings import Finding, advised
from plugin.audit.layers import ETCD, KERNEL, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD, KERNEL)
_RESTART = "restart the plugin (`calico-libnetwork run`, or its systemd unit): its agent " \
           "writes the whole table at its start"
# One forwarding rule as nft lists it, e.g. "ip daddr 127.0.0.1 udp dport 5353 ct mark
# set ct mark | 0x00040000 dnat ip to 10.0.0.5:53" or "... dnat ip6 to [fd00::5]:80".
_RULE = re.compile(r"^(?:ip6? daddr (?P<host_ip>\S+) )?(?:meta nfproto ipv[46] )?"
                   r"(?P<protocol>tcp|udp|sctp) dport (?P<host_port>\d+) .*"
                   r"dnat ip6? to \[?(?P<address>[^\]\s]+?)\]?:(?P<port>\d+)$")


def check(layers: Layers, tools: Tools, _grace) -> list[Finding]:
    before = _programmed()
    read = _wanted(layers.weps)
    after = _programmed()
    again = _wanted(w for w in tools.resources.list("WorkloadEndpoint")
                    if w.spec.get("node") == layers.node and w.namespace == ep.NAMESPACE)
    if before is None and after is None:
        if read & again:
            return [advised("published-table", f"the published ports' table {TABLE} is "
                            "missing: no container's published port answers", _RESTART)]
        return []
    before, after = before or set(), after or set()
    names = {str(a): e.container for e in (layers.docker or {}).values()
             for a in ep.addresses(e.attached.ip_networks)}
    found = [advised("published-stray", f"host port {_shown(b)} is forwarded to {b[3]}:{b[4]}, "
                     "which no container of this node publishes it for", _RESTART)
             for b in sorted((before & after) - (read | again))]
    found += [advised("published-missing", f"container {names.get(b[3], b[3])}'s published "
                      f"port {_shown(b)} -> {b[4]} is not forwarded", _RESTART,
                      container=names.get(b[3]))
              for b in sorted((read & again) - (before | after))]
    return found


def _wanted(weps) -> set[tuple]:
    """(protocol, host address or "", host port, address, port) of each
    binding of these endpoints, per address of the binding's family."""
    return {(b.protocol, "" if b.host_ip in UNSPECIFIED else b.host_ip, b.host_port,
             address, b.port)
            for res in weps or ()
            for _, address, bindings in forwards(WorkloadEndpoint.from_resource(res))
            for b in bindings}


def _programmed() -> set[tuple] | None:
    """The forwarding rules of the table, None when it is not there."""
    try:
        listed = nftables.run(f"list chain {TABLE} published\n")
    except KernelError:
        return None
    rules = set()
    for line in listed.splitlines():
        match = _RULE.match(line.strip())
        if match:
            rules.add((match["protocol"], match["host_ip"] or "", int(match["host_port"]),
                       match["address"], int(match["port"])))
    return rules


def _shown(binding: tuple) -> str:
    protocol, host_ip, host_port = binding[:3]
    return f"{host_ip}:{host_port}/{protocol}" if host_ip else f"{host_port}/{protocol}"
