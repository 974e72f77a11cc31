"""Published ports: a host port (on every host address, or on one) that
leads to a container's port.  The driver writes an endpoint's bindings on
its WorkloadEndpoint (annotations.PUBLISHED_PORTS) and the node agent of
its host renders them (agent/published.py): one record, so a binding lives
exactly as long as its endpoint."""

import json
import logging
from dataclasses import dataclass

import netaddr

from datastore.annotations import PUBLISHED_PORTS

LOG = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True, slots=True, order=True)
class PortBinding:
    protocol: str  # tcp, udp or sctp
    host_port: int
    port: int  # the container's
    host_ip: str = ""  # "": every address of the host; 0.0.0.0 or ::, every one of a family

    def overlaps(self, other: "PortBinding") -> bool:
        """Both would take the same host port for some address."""
        if (self.protocol, self.host_port) != (other.protocol, other.host_port):
            return False
        if not self.host_ip or not other.host_ip:
            return True
        mine, theirs = netaddr.IPAddress(self.host_ip), netaddr.IPAddress(other.host_ip)
        return mine.version == theirs.version and (mine == theirs or not mine or not theirs)

    @property
    def version(self) -> int | None:
        """The host address's IP version; None for every address."""
        return netaddr.IPAddress(self.host_ip).version if self.host_ip else None

    def __str__(self):
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host + ':' if host else ''}{self.host_port}->{self.port}/{self.protocol}"

    def to_json(self) -> dict:
        return {"protocol": self.protocol, "hostPort": self.host_port, "port": self.port,
                "hostIP": self.host_ip}

    @classmethod
    def from_json(cls, item: dict) -> "PortBinding":
        binding = cls(str(item["protocol"]), int(item["hostPort"]), int(item["port"]),
                      str(item.get("hostIP") or ""))
        if (binding.protocol not in PROTOCOLS or not 0 < binding.port < 65536
                or not 0 < binding.host_port < 65536):
            raise ValueError(f"not a published port: {item!r}")
        if binding.host_ip:
            netaddr.IPAddress(binding.host_ip)
        return binding


def dumps(bindings) -> str:
    return json.dumps([b.to_json() for b in sorted(bindings)], separators=(",", ":"))


def loads(text: str | None) -> tuple[PortBinding, ...]:
    """The bindings of an annotation (ValueError, KeyError, TypeError if unreadable)."""
    if not text:
        return ()
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("published ports are not a list")
    return tuple(sorted(PortBinding.from_json(item) for item in items))


def published(name: str, annotations: dict) -> tuple[PortBinding, ...]:
    """The bindings a WorkloadEndpoint's annotations hold; none, logged, when
    they are unreadable (the endpoint stays, unpublished)."""
    try:
        return loads(annotations.get(PUBLISHED_PORTS))
    except (ValueError, KeyError, TypeError) as exc:
        LOG.warning("endpoint %s publishes no port: unreadable %s: %s", name, PUBLISHED_PORTS,
                    exc)
        return ()
