"""The few things the plugin asks dockerd, never on a request's critical path.

dockerd blocks on plugins while it starts; a plugin that waits for dockerd
inside a request deadlocks it (Calico libnetwork-plugin issue #49).  So
every call here has a short timeout, failures return None, and callers use
it from background threads or with a cached fallback.
"""

import logging

import docker
import docker.errors
import requests.exceptions

LOG = logging.getLogger(__name__)
_FAILURES = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


class DockerApi:
    def __init__(self, base_url: str, timeout: float = 1.0):
        self.base_url = base_url
        self.timeout = timeout

    def _client(self):
        return docker.APIClient(base_url=self.base_url, timeout=self.timeout, version="1.41")

    def network_name(self, network_id: str) -> str | None:
        try:
            with self._client() as api:
                return api.inspect_network(network_id)["Name"]
        except _FAILURES as exc:
            LOG.debug("network %s not inspectable yet: %s", network_id[:12], exc)
            return None

    def endpoint_container_labels(self, network_id: str, endpoint_id: str) -> dict | None:
        """Labels of the container that owns endpoint_id, once dockerd shows it."""
        try:
            with self._client() as api:
                containers = api.inspect_network(network_id).get("Containers") or {}
                for container_id, info in containers.items():
                    if info.get("EndpointID") == endpoint_id and not container_id.startswith("ep-"):
                        config = api.inspect_container(container_id).get("Config") or {}
                        return config.get("Labels") or {}
        except _FAILURES as exc:
            LOG.debug("endpoint %s not inspectable yet: %s", endpoint_id[:12], exc)
        return None
