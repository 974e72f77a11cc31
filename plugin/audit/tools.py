"""What the repairs write with: the same datastore, IPAM and dockerd
vocabulary the plugin uses, so every repair is one of the plugin's own
compare-and-swap or replay-safe steps."""

from dataclasses import dataclass
from functools import cached_property

from agent.settings import AgentSettings
from datastore.resources import Resources
from driver.docker_api import DockerApi
from driver.sandboxes import Sandboxes
from ipam.allocator import Ipam


@dataclass
class Tools:
    node: str
    resources: Resources | None  # None: etcd not reachable
    docker: DockerApi | None
    create_profiles: bool = True
    label_endpoints: bool = False
    agent: AgentSettings | None = None  # None: no policy table to compare

    @cached_property
    def ipam(self) -> Ipam:
        return Ipam(self.resources.etcd, self.node, self.resources)

    @cached_property
    def sandboxes(self) -> Sandboxes:
        return Sandboxes(self.resources.etcd, self.node)
