"""The agent's settings: a part of the plugin's one Config (plugin/config.py
reads and checks them), and the name of a setting for an IP version."""

from dataclasses import dataclass

from datastore.felix_configuration import FelixSettings
from datastore.settings import EtcdSettings


@dataclass(frozen=True)
class AgentSettings:
    nodename: str
    etcd: EtcdSettings = EtcdSettings()
    # "10.0.0.11/24"; None autodetects with ip_autodetection_method.
    ip: str | None = None
    ip_autodetection_method: str = "first-found"
    # IPv6 as calico/node: "none" (no IPv6 between hosts), "autodetect", or
    # "fd00::11/64"; written to the Node as bgp.ipv6Address.
    ip6: str = "none"
    ip6_autodetection_method: str = "first-found"
    # How often the liveness key is written; the watch's idle timeout must
    # be a few times longer, since this write is what keeps the watch busy.
    heartbeat_interval: float = 3.0
    watch_idle_timeout: float = 10.0
    # Full kernel resync even without etcd changes (repairs routes someone
    # deleted, picks up interfaces that came up later).
    resync_interval: float = 30.0
    # Enforce Profiles and GlobalNetworkPolicies (off: Felix does it).
    policy: bool = True
    # FELIX_DEFAULTENDPOINTTOHOSTACTION, FELIX_FAILSAFE*HOSTPORTS: what they
    # set wins over the FelixConfigurations in etcd, then Felix's defaults.
    felix_env: FelixSettings = FelixSettings()
    # Answer the names of every host's containers (agent/names).
    names: bool = True
    # Where the agent leaves files for `calico-libnetwork status`.
    run_dir: str = "/run/calico-libnetwork"

    @property
    def policy_status_path(self) -> str:
        return f"{self.run_dir}/policy-{self.nodename}.json"

    @property
    def names_status_path(self) -> str:
        return f"{self.run_dir}/names-{self.nodename}.json"

    @property
    def names_health_path(self) -> str:
        """The names watchdog's file (agent/names/health.py responder_health)."""
        return f"{self.run_dir}/names-health-{self.nodename}.json"


def variable(name: str, version: int) -> str:
    """The variable's name for an IP version: IP -> IP6, IP_AUTODETECTION_METHOD
    -> IP6_AUTODETECTION_METHOD."""
    if version == 4:
        return name
    return "IP6" + name[len("IP"):]
