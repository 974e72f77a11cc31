"""The endpoints and policies in etcd against the node agent's policy
table: each named set (a selector's members, the Calico hosts' addresses)
as the agent would compile it from the records now, against its elements
in the kernel.  The agent writes sets by difference, so an element deleted
or added by hand stays wrong until it writes the whole table again, at its
start.  A difference is reported only when the kernel shows it before and
after etcd is read (the agent programs a change within milliseconds)."""

from agent.policy.engine import PolicyEngine
from agent.policy.nft import TABLE, PolicyTable
from datastore.follower import snapshot
from driver import endpoints as ep
from plugin.audit.findings import Finding, advised
from plugin.audit.layers import ETCD, KERNEL, Layers
from plugin.audit.tools import Tools

NEEDS = (ETCD, KERNEL)
_RESTART = "restart the plugin (`calico-libnetwork run`, or its systemd unit): its agent " \
           "writes the whole table at its start"


def check(layers: Layers, tools: Tools, _grace) -> list[Finding]:
    agent = tools.agent
    if agent is None or not agent.policy:
        return []  # Felix, or nothing, enforces policy here
    before = PolicyTable().sets()
    engine = PolicyEngine(agent.nodename, agent.policy_status_path, agent.resync_interval,
                          agent.felix_env, agent.etcd.endpoints)
    snapshot(tools.resources.etcd, [engine])
    desired = {name: members for name, (_, members) in engine.compute().sets.items()}
    after = PolicyTable().sets()
    if before is None or after is None:
        return [advised("policy-table", f"the policy table inet {TABLE} is missing: "
                        "containers' traffic is not filtered as policy says", _RESTART)]
    names = {str(a): f"{a} (container {e.container})" for e in (layers.docker or {}).values()
             for a in ep.addresses(e.attached.ip_networks)}
    found = []
    for name in sorted(desired):
        if name not in before and name not in after:
            found.append(advised("policy-set", f"policy set {name} is missing", _RESTART))
            continue
        wanted, empty = desired[name], frozenset()
        lacking = (wanted - before.get(name, empty)) & (wanted - after.get(name, empty))
        extra = (before.get(name, empty) - wanted) & (after.get(name, empty) - wanted)
        for what, addresses in (("lacks", lacking), ("holds", extra)):
            if addresses:
                shown = ", ".join(names.get(a, a) for a in sorted(addresses))
                found.append(advised("policy-set", f"policy set {name} {what} {shown}"
                                     + (" (no endpoint has it any more)" if what == "holds"
                                        else ""), _RESTART))
    return found
