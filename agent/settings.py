"""The agent's settings: a part of the plugin's one Config, and the checks
of IP and IP_AUTODETECTION_METHOD that Config runs when it reads them."""

from dataclasses import dataclass

from netaddr import AddrFormatError, IPNetwork

from agent.errors import SettingsError
from datastore.settings import EtcdSettings

AUTODETECT_METHODS = ("first-found", "interface=", "can-reach=")


@dataclass(frozen=True)
class AgentSettings:
    nodename: str
    etcd: EtcdSettings = EtcdSettings()
    # "10.0.0.11/24"; None autodetects with ip_autodetection_method.
    ip: str | None = None
    ip_autodetection_method: str = "first-found"
    # How often the liveness key is written; the watch's idle timeout must
    # be a few times longer, since this write is what keeps the watch busy.
    heartbeat_interval: float = 3.0
    watch_idle_timeout: float = 10.0
    # Full kernel resync even without etcd changes (repairs routes someone
    # deleted, picks up interfaces that came up later).
    resync_interval: float = 30.0
    # Enforce Profiles and GlobalNetworkPolicies (off: Felix does it).
    policy: bool = True
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


def parse_ip_setting(text: str) -> IPNetwork:
    """IP in calico/node's form: an address with its prefix, "10.0.0.11/24"."""
    try:
        net = IPNetwork(text)
    except (AddrFormatError, ValueError):
        net = None
    if net is None or net.version != 4 or "/" not in text:
        raise SettingsError(f"IP: {text!r} is not an IPv4 address with its prefix length, "
                            "e.g. 10.0.0.11/24 (or set IP=autodetect)")
    return net


def check_autodetection_method(method: str) -> str:
    """IP_AUTODETECTION_METHOD: first-found, interface=REGEX or can-reach=ADDRESS."""
    if not method.startswith(AUTODETECT_METHODS):
        raise SettingsError(
            f"IP_AUTODETECTION_METHOD: {method!r} is not "
            "first-found, interface=REGEX or can-reach=ADDRESS")
    return method
