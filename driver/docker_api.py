"""The few things the plugin asks dockerd, each within a short timeout.

dockerd blocks on plugins while it starts; a plugin that waits for dockerd
inside a request deadlocks it (Calico libnetwork-plugin issue #49).  So
every call here has a short timeout, a network's name is asked in the
background after CreateNetwork and kept in etcd, and a request asks dockerd
only when that record has no name, once, within the timeout.

The API version is negotiated, never pinned: dockerd 29.0-29.2 refuse
versions below 1.44, and 20.10 knows none above 1.41.  The first question
asks `/version` (docker-py's version="auto"); later ones reuse its answer.
When dockerd refuses the version it gave (it was replaced by another
release), the version is negotiated again, once.
"""

import logging
import threading
from dataclasses import dataclass

import docker
import docker.errors
import requests.exceptions

from driver.errors import DockerUnavailable

LOG = logging.getLogger(__name__)
_FAILURES = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class DockerApi:
    def __init__(self, base_url: str, timeout: float = 1.0):
        self.base_url = base_url
        self.timeout = timeout
        self.api_version = None  # what dockerd offered, once asked
        self._clients = threading.local()  # requests sessions serve one thread

    def network_name(self, network_id: str) -> str:
        """The network's name; DockerUnavailable says why dockerd did not tell it."""
        return self._ask(f"network {network_id[:12]}",
                         lambda api: api.inspect_network(network_id)["Name"])

    def endpoint_ids(self, network_id: str) -> set[str]:
        """The endpoints dockerd holds on a network (none if it has no such
        network); DockerUnavailable when it does not answer."""
        return set(self.attached(network_id)[1])

    def attached(self, network_id: str) -> "tuple[str | None, dict[str, Attached]]":
        """The network's name (None: dockerd has no such network) and what
        one inspect of it shows of each endpoint: endpoint id -> Attached;
        DockerUnavailable when dockerd does not answer."""
        def inspect(api):
            try:
                network = api.inspect_network(network_id)
            except docker.errors.NotFound:
                return None, {}
            return network.get("Name"), {
                info.get("EndpointID"): Attached.from_network(container_id, info)
                for container_id, info in (network.get("Containers") or {}).items()}
        return self._ask(f"network {network_id[:12]}", inspect)

    def network_drivers(self) -> dict[str, str]:
        """Network id -> driver name of every network dockerd has."""
        return self._ask("its networks", lambda api: {
            n["Id"]: n.get("Driver") or "" for n in api.networks()})

    def container(self, network_id: str, container_id: str) -> "EndpointContainer":
        """What `docker inspect` of a container tells for one of its networks."""
        def inspect(api):
            network_name = api.inspect_network(network_id).get("Name")
            return EndpointContainer.from_inspect(
                api.inspect_container(container_id), network_id, network_name)
        return self._ask(f"container {container_id[:12]}", inspect)

    def server_version(self) -> str:
        """dockerd's release, e.g. "20.10.24" (for `status`, never a request)."""
        return self._ask("its version", lambda api: api.version()["Version"])

    def endpoint_container(self, network_id: str, endpoint_id: str) -> "EndpointContainer | None":
        """What one inspect of the container that owns endpoint_id tells
        (labels, the network's name, the endpoint's DNS names), once dockerd
        shows it; None until then or when dockerd does not answer."""
        def inspect(api):
            network = api.inspect_network(network_id)
            for container_id, info in (network.get("Containers") or {}).items():
                if info.get("EndpointID") == endpoint_id and not container_id.startswith("ep-"):
                    return EndpointContainer.from_inspect(
                        api.inspect_container(container_id), network_id, network.get("Name"))
            return None
        try:
            return self._ask(f"endpoint {endpoint_id[:12]}", inspect)
        except DockerUnavailable as exc:
            LOG.debug("endpoint %s not inspectable yet: %s", endpoint_id[:12], exc)
            return None

    def _ask(self, what: str, question):
        for attempt in range(2):
            negotiated = self.api_version
            try:
                return question(self._client())
            except _FAILURES as exc:
                self._drop_client()
                if isinstance(exc, docker.errors.APIError) and _version_refused(exc):
                    self.api_version = None
                    if negotiated and attempt == 0:
                        continue  # dockerd changed under us: ask its version again
                raise DockerUnavailable(self._failure(what, exc, negotiated)) from exc
        raise DockerUnavailable(f"dockerd at {self.base_url} kept refusing the API version "
                                "it offered")

    def _client(self) -> docker.APIClient:
        """This thread's client, kept with its connection between questions
        while the API version holds: a new one costs a connection and a
        session, ~15 % of a question's CPU, while dockerd starts a container."""
        api = getattr(self._clients, "api", None)
        if api is None or api.api_version != self.api_version:
            self._drop_client()
            api = self._clients.api = docker.APIClient(
                base_url=self.base_url, timeout=self.timeout, version=self.api_version or "auto")
            self.api_version = api.api_version
        return api

    def _drop_client(self) -> None:
        """Close this thread's client (after a failure its connection may be
        broken); the next question opens another."""
        api = getattr(self._clients, "api", None)
        self._clients.api = None
        if api is not None:
            api.close()

    def _failure(self, what: str, exc: Exception, version: str | None) -> str:
        where = f"dockerd at {self.base_url}"
        if isinstance(exc, docker.errors.APIError):
            if _version_refused(exc):
                return f"{where} refused API version {version}: {exc.explanation}"
            if exc.status_code == 404:
                return f"{where} does not know {what}"
            return f"{where} answered HTTP {exc.status_code} about {what}: {exc.explanation}"
        cause = _transport_cause(exc)
        if isinstance(cause, requests.exceptions.Timeout):
            return (f"{where} did not answer within {self.timeout:g}s (while dockerd starts "
                    "it answers no API call)")
        if isinstance(cause, requests.exceptions.ConnectionError):
            return f"cannot reach {where} ({_innermost(cause)})"
        return f"asking {where} about {what} failed: {exc}"


@dataclass(frozen=True)
class Attached:
    """An endpoint as `docker network inspect` lists it."""

    container_id: str  # "ep-<id>" for an endpoint without a container (a Swarm balancer)
    name: str  # the container's
    mac: str | None
    ip_networks: tuple[str, ...]  # as the WorkloadEndpoint lists them: /32, /128

    @classmethod
    def from_network(cls, container_id: str, info: dict):
        addresses = []
        for field in ("IPv4Address", "IPv6Address"):
            if info.get(field):
                ip = info[field].split("/")[0]
                addresses.append(f"{ip}/{128 if ':' in ip else 32}")
        return cls(container_id, info.get("Name") or container_id[:12],
                   info.get("MacAddress") or None, tuple(addresses))


@dataclass(frozen=True)
class EndpointContainer:
    """The container behind an endpoint, as `docker inspect` shows it."""

    labels: dict
    network: str | None  # the network's name
    # The names Docker's embedded DNS answers for it on that network: the
    # container name, its aliases (--network-alias, Compose's service name),
    # the short container id and, from Docker 25, DNSNames (which adds the
    # hostname when it differs).
    dns_names: tuple[str, ...]
    sandbox_key: str | None = None  # the network namespace's path, as Join was given it

    @classmethod
    def from_inspect(cls, container: dict, network_id: str, network_name: str | None):
        config = container.get("Config") or {}
        networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
        name, settings = network_name, {}
        for key, value in networks.items():
            if (value or {}).get("NetworkID") == network_id or key == network_name:
                name, settings = key, value or {}
                break
        names = [(container.get("Name") or "").lstrip("/"), *(settings.get("Aliases") or ()),
                 *(settings.get("DNSNames") or ()), (container.get("Id") or "")[:12]]
        return cls(config.get("Labels") or {}, name, tuple(dict.fromkeys(n for n in names if n)),
                   (container.get("NetworkSettings") or {}).get("SandboxKey") or None)


def _version_refused(exc: docker.errors.APIError) -> bool:
    # dockerd's versionUnsupportedError: HTTP 400 "client version X is too old"/"too new".
    return exc.status_code == 400 and "client version" in str(exc.explanation or "")


def _transport_cause(exc: BaseException) -> BaseException:
    """The requests error behind exc (docker-py wraps the /version probe's)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.RequestException):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def _innermost(exc: BaseException) -> BaseException:
    """The OS error at the bottom of a requests error, e.g. "No such file or directory"."""
    found = exc
    for arg in getattr(exc, "args", ()):
        if isinstance(arg, BaseException):
            found = _innermost(arg)
    return found
