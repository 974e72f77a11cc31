"""The NetworkDriver's settings: a part of the plugin's one Config."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DriverSettings:
    nodename: str
    ifprefix: str = "cali"
    create_profiles: bool = True
    label_endpoints: bool = False
    label_poll_timeout: float = 5.0
    veth_mtu: int | None = None
    proc_sys: str = "/proc/sys"
    docker_host: str = "unix:///var/run/docker.sock"
