"""The audit behind `calico-libnetwork check`: every layer of this node
compared with every other, one module per pair of layers.

Each entry of CHECKS is (the layers it reads, its function); the function
gets the layers read once (layers.py), the repair tools (tools.py) and the
grace period, and returns findings (findings.py).  A check whose layers
could not be read is skipped, and the report says which layer and why.
A new comparison is one more module and one more entry here.
"""

import datetime
from typing import NamedTuple
from collections.abc import Callable

from datastore.errors import DatastoreError
from driver.endpoint_sweep import created
from driver.errors import DriverError
from ipam.errors import IpamError
from ipam.store import BlockTaken, Conflict
from kernel.errors import KernelError
from plugin.audit import (docker_endpoints, endpoints_ipam, endpoints_kernel, ipam_records,
                          node_record, policy_sets, profiles, published,
                          responder)
from plugin.audit.findings import Finding, RepairRefused
from plugin.audit.layers import Layers
from plugin.audit.tools import Tools

# What a repair may meet when the world moved since the read: it then
# leaves things as they are and says why.
REPAIR_FAILURES = (RepairRefused, DatastoreError, DriverError, IpamError, KernelError,
                   Conflict, BlockTaken)


class Grace(NamedTuple):
    """Records younger than this are left alone: a container may be between
    its address, its endpoint and its Join."""
    seconds: float

    def old_enough(self, resource) -> bool:
        age = datetime.datetime.now(datetime.timezone.utc) - created(resource)
        return age.total_seconds() >= self.seconds


class Check(NamedTuple):
    needs: tuple[str, ...]
    run: Callable[[Layers, Tools, Grace], list[Finding]]


CHECKS = [
    Check(docker_endpoints.NEEDS, docker_endpoints.check),
    Check(endpoints_kernel.NEEDS, endpoints_kernel.check),
    Check(endpoints_ipam.NEEDS, endpoints_ipam.check),
    Check(ipam_records.NEEDS, ipam_records.check),
    Check(node_record.NEEDS, node_record.check),
    Check(profiles.NEEDS, profiles.check),
    Check(policy_sets.NEEDS, policy_sets.check),
    Check(published.NEEDS, published.check),
    Check(responder.NEEDS, responder.check),
]


def audit(layers: Layers, tools: Tools, grace: Grace) -> list[Finding]:
    found = []
    for check in CHECKS:
        if layers.readable(*check.needs):
            found += check.run(layers, tools, grace)
    return found


def repair(findings: list[Finding]) -> None:
    """Run each finding's repair, in order (an endpoint is rewritten before
    interfaces and addresses are judged); a failure is recorded on it."""
    for finding in findings:
        if finding.act is None:
            continue
        try:
            finding.act()
            finding.repaired = True
        except REPAIR_FAILURES as exc:
            finding.error = str(exc) or type(exc).__name__
