"""Configuration: read once from the environment into one immutable object.

Variable names are Calico's.  A bad value stops the start with a message
that names the variable.
"""

import os
import re
import socket
from dataclasses import dataclass

import netaddr

from agent.settings import AgentSettings, variable
from datastore.felix_configuration import FelixConfigurationError, FelixSettings
from datastore.resources import valid_name
from datastore.settings import EtcdSettings
from driver.settings import DriverSettings

DEFAULT_PLUGIN_DIR = "/run/docker/plugins"
_IFPREFIX_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_-]{0,9}$")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_AUTODETECT_METHODS = ("first-found", "interface=", "can-reach=")


class ConfigError(Exception):
    """A setting (environment variable) has a bad value; the message names it."""


@dataclass(frozen=True)
class DefaultPools:
    """calico/node's default-pool settings (CALICO_IPV4POOL_* and friends)."""

    disabled: bool = False
    ipv4_cidr: str = "192.168.0.0/16"
    ipv4_block_size: int = 26
    ipv6_cidr: str | None = None
    ipv6_block_size: int = 122
    ipv6_nat_outgoing: bool = False  # calico/node's default too
    ipv6_vxlan_mode: str = "Never"
    nat_outgoing: bool = True
    ipip_mode: str = "Never"
    vxlan_mode: str = "Never"
    node_selector: str = "all()"

    @classmethod
    def from_env(cls, env) -> "DefaultPools":
        return cls(
            disabled=_bool(env, "NO_DEFAULT_POOLS", False),
            ipv4_cidr=_cidr(env, "CALICO_IPV4POOL_CIDR", 4) or cls.ipv4_cidr,
            ipv4_block_size=int(_number(env, "CALICO_IPV4POOL_BLOCK_SIZE", 26, 20, 32)),
            ipv6_cidr=_cidr(env, "CALICO_IPV6POOL_CIDR", 6),
            ipv6_block_size=int(_number(env, "CALICO_IPV6POOL_BLOCK_SIZE", 122, 116, 128)),
            ipv6_nat_outgoing=_bool(env, "CALICO_IPV6POOL_NAT_OUTGOING", False),
            ipv6_vxlan_mode=_mode(env, "CALICO_IPV6POOL_VXLAN"),
            nat_outgoing=_bool(env, "CALICO_IPV4POOL_NAT_OUTGOING", True),
            ipip_mode=_mode(env, "CALICO_IPV4POOL_IPIP"),
            vxlan_mode=_mode(env, "CALICO_IPV4POOL_VXLAN"),
            node_selector=env.get("CALICO_IPV4POOL_NODE_SELECTOR") or "all()",
        )


@dataclass(frozen=True)
class Config:
    """Everything the plugin runs with.  Each part goes whole to its user:
    `driver` to the NetworkDriver, `agent` to the node agent, `etcd` to
    datastore.settings.connect.  The node name is read once, here, and the
    parts carry that same value (and the agent that same etcd)."""

    nodename: str
    etcd: EtcdSettings
    driver: DriverSettings
    agent: AgentSettings
    debug: bool = False
    default_pools: DefaultPools = DefaultPools()
    prometheus_port: int | None = None  # None: no metrics, nothing listens

    def __post_init__(self):
        if (self.driver.nodename != self.nodename or self.agent.nodename != self.nodename
                or self.agent.etcd != self.etcd):
            raise ValueError("Config: driver and agent must carry its nodename and etcd")

    @classmethod
    def from_env(cls, env=None) -> "Config":
        env = os.environ if env is None else env
        etcd = EtcdSettings(
            endpoints=_endpoints(env),
            ca_cert_file=_file(env, "ETCD_CA_CERT_FILE"),
            cert_file=_file(env, "ETCD_CERT_FILE"),
            key_file=_file(env, "ETCD_KEY_FILE"),
            timeout=_number(env, "ETCD_TIMEOUT", 3.0, 0.1, 60.0),
        )
        nodename = _nodename(env)
        driver = DriverSettings(
            nodename=nodename,
            ifprefix=_ifprefix(env),
            create_profiles=_bool(env, "CALICO_LIBNETWORK_CREATE_PROFILES", True),
            label_endpoints=_bool(env, "CALICO_LIBNETWORK_LABEL_ENDPOINTS", False),
            label_poll_timeout=_duration(env, "CALICO_LIBNETWORK_LABEL_POLL_TIMEOUT", 5.0),
            veth_mtu=_mtu(env),
            docker_host=env.get("DOCKER_HOST") or DriverSettings.docker_host,
            proc_sys=_directory(env, "CALICO_LIBNETWORK_PROC_SYS", "/proc/sys"),
        )
        return cls(
            nodename=nodename,
            etcd=etcd,
            driver=driver,
            agent=AgentSettings(
                nodename=nodename, etcd=etcd, **_node_address(env),
                policy=_bool(env, "CALICO_LIBNETWORK_POLICY", True),
                felix_env=_felix_env(env),
                names=_bool(env, "CALICO_LIBNETWORK_DNS", True),
                run_dir=env.get("CALICO_LIBNETWORK_RUN_DIR") or AgentSettings.run_dir),
            debug=bool(env.get("CALICO_DEBUG")),
            default_pools=DefaultPools.from_env(env),
            prometheus_port=_port(env, "CALICO_LIBNETWORK_PROMETHEUS_PORT"),
        )


def _endpoints(env) -> tuple[str, ...]:
    raw = env.get("ETCD_ENDPOINTS", "").strip()
    if not raw:
        return EtcdSettings.endpoints
    eps = tuple(e.strip() for e in raw.split(",") if e.strip())
    for ep in eps:
        if not re.match(r"^https?://[^/\s:]+(:\d{1,5})?/?$", ep):
            raise ConfigError(
                f"ETCD_ENDPOINTS: {ep!r} is not an etcd URL; "
                "use a comma list such as http://10.0.0.1:2379,https://10.0.0.2:2379")
    if any(ep.startswith("https") for ep in eps) and not env.get("ETCD_CA_CERT_FILE"):
        raise ConfigError("ETCD_CA_CERT_FILE: must be set for https etcd endpoints")
    return eps


def _file(env, name) -> str | None:
    path = env.get(name) or None
    if path and not os.path.isfile(path):
        raise ConfigError(f"{name}: no such file {path!r}")
    return path


def _node_address(env) -> dict:
    """IP, IP6 and their autodetection methods, checked as the node agent
    reads them.  IP6 defaults to none, as in calico/node."""
    ip = (env.get("IP") or "").strip()
    ip = None if ip in ("", "autodetect") else ip
    method = (env.get("IP_AUTODETECTION_METHOD") or "first-found").strip()
    ip6 = (env.get("IP6") or "").strip() or "none"
    method6 = (env.get("IP6_AUTODETECTION_METHOD") or "first-found").strip()
    if ip is not None:
        _check_ip(ip)
    _check_autodetection_method(method)
    if ip6 not in ("none", "autodetect"):
        _check_ip(ip6, 6)
    _check_autodetection_method(method6, 6)
    return {"ip": ip, "ip_autodetection_method": method,
            "ip6": ip6, "ip6_autodetection_method": method6}


def _check_ip(text: str, version: int = 4) -> None:
    """IP (IP6) in calico/node's form: an address with its prefix,
    "10.0.0.11/24" ("fd00::11/64")."""
    try:
        net = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError):
        net = None
    if net is None or net.version != version or "/" not in text:
        example, other = ("10.0.0.11/24", "autodetect") if version == 4 else \
            ("fd00::11/64", "autodetect or IP6=none")
        raise ConfigError(f"{variable('IP', version)}: {text!r} is not an IPv{version} "
                          f"address with its prefix length, e.g. {example} (or set "
                          f"{variable('IP', version)}={other})")


def _check_autodetection_method(method: str, version: int = 4) -> None:
    """IP_AUTODETECTION_METHOD (IP6_...): first-found, interface=REGEX or
    can-reach=ADDRESS."""
    if not method.startswith(_AUTODETECT_METHODS):
        raise ConfigError(
            f"{variable('IP_AUTODETECTION_METHOD', version)}: {method!r} is not "
            "first-found, interface=REGEX or can-reach=ADDRESS")


def _felix_env(env) -> FelixSettings:
    try:
        return FelixSettings.from_env(env)
    except FelixConfigurationError as exc:
        raise ConfigError(str(exc)) from None


def _directory(env, name, default) -> str:
    path = env.get(name) or default
    if not os.path.isdir(path):
        raise ConfigError(f"{name}: no such directory {path!r}")
    return path


def _nodename(env) -> str:
    var = "NODENAME" if env.get("NODENAME") else "HOSTNAME"
    name = (env.get(var) or "").strip()
    if not name:
        # calico/node lowercases the hostname it derives the node name from.
        name = socket.gethostname().strip().lower()
    if not valid_name(name):
        raise ConfigError(
            f"{var}: node name {name!r} is not valid for Calico (lowercase letters, "
            "digits, '-' and '.'); set NODENAME to the name calico/node uses")
    return name


def _ifprefix(env) -> str:
    prefix = env.get("CALICO_LIBNETWORK_IFPREFIX") or "cali"
    if not _IFPREFIX_RE.match(prefix):
        raise ConfigError(
            f"CALICO_LIBNETWORK_IFPREFIX: {prefix!r} must be 1-10 letters, digits, "
            "'-' or '_', starting with a letter")
    return prefix


def _bool(env, name, default) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}: {raw!r} is not true or false")


def _mtu(env) -> int | None:
    raw = env.get("CALICO_LIBNETWORK_VETH_MTU")
    if not raw:
        return None
    try:
        mtu = int(raw)
    except ValueError:
        mtu = -1
    if not 68 <= mtu <= 65535:
        raise ConfigError(f"CALICO_LIBNETWORK_VETH_MTU: {raw!r} is not an MTU (68-65535)")
    return mtu


def _port(env, name) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    port = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}: {raw!r} is not a TCP port (1-65535); unset it to serve "
                          "no metrics")
    return port


def _cidr(env, name, version) -> str | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        net = netaddr.IPNetwork(raw)
    except (netaddr.AddrFormatError, ValueError):
        net = None
    if net is None or net.version != version or "/" not in raw:
        raise ConfigError(f"{name}: {raw!r} is not an IPv{version} CIDR")
    return str(net.cidr)


def _mode(env, name) -> str:
    raw = env.get(name) or "Never"
    for mode in ("Always", "CrossSubnet", "Never"):
        if raw.lower() == mode.lower():
            return mode
    raise ConfigError(f"{name}: {raw!r} must be Always, CrossSubnet or Never")


def _number(env, name, default, low, high) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds ({low}-{high})")
    return value


def _duration(env, name, default) -> float:
    """A Go-style duration as Calico used (5s, 500ms, 1m) or plain seconds."""
    raw = env.get(name)
    if not raw:
        return default
    m = re.match(r"^(\d+(?:\.\d+)?)(ms|s|m)?$", raw.strip())
    if not m:
        raise ConfigError(f"{name}: {raw!r} is not a duration such as 5s or 500ms")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale
