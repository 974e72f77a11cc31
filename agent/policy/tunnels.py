"""VXLAN and IPIP into the host, as Felix admits them (felix/rules/static.go
filterInputChain, felix/calc/encapsulation_resolver.go): a host decapsulates
what arrives and forwards the inner packet, whose source is whatever the
sender wrote, past the anti-spoofing check and policy.  So encapsulated
packets are accepted only from the Calico hosts (each Node's
bgp.ipv4Address / ipv6Address, sets all-hosts-net and all-hosts-net-v6)
and, while a pool uses that encapsulation, dropped from anyone else before
host endpoint policy sees them.

Felix's VXLAN source set (all-vxlan-net) holds the same addresses, of the
nodes with a VTEP; here every Calico host's, so Docker's swarm overlay
(also UDP 4789) between nodes works before or without a VTEP.  Without a
VXLAN pool, VXLAN from elsewhere meets host endpoint policy, as in Felix.
The host's own IPIP to the Calico hosts skips host endpoint policy, as
Felix's output chain does; its VXLAN always did (nft.py).

Workloads send neither: their egress chains drop both whatever the pools
(compiler.py), as Felix does by default (allowVXLANPacketsFromWorkloads,
allowIPIPPacketsFromWorkloads false): any host that decapsulates, in this
cluster or not, would take the forged inner source; a container that runs
its own tunnel belongs on another network driver.
"""

from dataclasses import dataclass

from agent.policy.compiler import IPIP_PROTOCOL, VXLAN_PORT

HOSTS = {4: "all-hosts-net", 6: "all-hosts-net-v6"}  # Felix's ipset, and its v6 twin
TUNNELS_IN, TUNNELS_OUT = "tunnels-in", "tunnels-out"
_LOCAL = "fib daddr type local"


@dataclass(frozen=True)
class Encapsulation:
    """Which encapsulations the pools use (Felix's IPIPEnabled, VXLANEnabled,
    VXLANEnabledV6): a pool of that family whose mode is not Never."""

    ipip: bool = False
    vxlan: bool = False
    vxlan6: bool = False

    @classmethod
    def of(cls, pools) -> "Encapsulation":
        """pools: (IP version, ipipMode, vxlanMode) of each IPPool."""
        return cls(any(v == 4 and _used(i) for v, i, _ in pools),
                   any(v == 4 and _used(x) for v, _, x in pools),
                   any(v == 6 and _used(x) for v, _, x in pools))


def _used(mode: str) -> bool:
    return mode not in ("Never", "")  # unset is Never, as in Felix


def tunnel_chains(encapsulation: Encapsulation) -> dict[str, tuple[str, ...]]:
    """The chains the input and output base chains jump to first."""
    inbound, outbound = [], []
    if encapsulation.ipip:
        inbound += [f"ip protocol {IPIP_PROTOCOL} ip saddr @{HOSTS[4]} {_LOCAL} accept",
                    f"ip protocol {IPIP_PROTOCOL} drop"]
        outbound.append(f"ip protocol {IPIP_PROTOCOL} ip daddr @{HOSTS[4]} accept")
    for version, enabled in ((4, encapsulation.vxlan), (6, encapsulation.vxlan6)):
        family, ip = ("ipv4", "ip") if version == 4 else ("ipv6", "ip6")
        vxlan = f"meta nfproto {family} udp dport {VXLAN_PORT}"
        inbound.append(f"{vxlan} {ip} saddr @{HOSTS[version]} {_LOCAL} accept")
        if enabled:
            inbound.append(f"{vxlan} {_LOCAL} drop")
    return {TUNNELS_IN: tuple(inbound), TUNNELS_OUT: tuple(outbound)}
