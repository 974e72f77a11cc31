"""After a start: the endpoints of this node that dockerd no longer has.

dockerd retries a plugin it cannot reach for about 30 seconds, then gives
up and removes the container anyway: containers stopped while the plugin
was down (killed, or stopped) leave their WorkloadEndpoints behind, and
the addresses those list stay allocated.  Once things have settled after a
start, every endpoint written before this process started that dockerd
holds on none of the endpoint's networks is deleted, with its sandbox claim
and veth; `ipam gc` then finds its addresses unused and releases them.
"""

import datetime
import logging
import time

from datastore.errors import DatastoreError
from driver import endpoints as ep
from driver.errors import DockerUnavailable

LOG = logging.getLogger(__name__)

# By then a container that was starting when the plugin died has joined (or
# failed, and dockerd deleted its endpoint).
SETTLE_SECONDS = 60.0
GIVE_UP_SECONDS = 600.0  # dockerd or etcd still not answering: leave it


def sweep_when_settled(driver, started: datetime.datetime) -> None:
    """Run sweep() once things settled, retrying while dockerd or etcd do
    not answer (a thread's target)."""
    time.sleep(SETTLE_SECONDS)
    deadline, delay = time.monotonic() + GIVE_UP_SECONDS, 1.0
    while True:
        try:
            sweep(driver, started)
            return
        except (DockerUnavailable, DatastoreError) as exc:
            if time.monotonic() > deadline:
                LOG.warning("did not look for endpoints dockerd no longer has: %s", exc)
                return
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def sweep(driver, started: datetime.datetime) -> list[str]:
    """Delete this node's endpoints created before `started` (with a
    second's margin: creation times have whole seconds) that dockerd holds
    on none of their networks; their ids.  Raises DockerUnavailable (having
    deleted nothing) when dockerd does not answer."""
    node = driver.settings.nodename
    before = started.replace(microsecond=0) - datetime.timedelta(seconds=1)
    weps = [w for w in ep.node_weps(driver.resources, node)
            if w.annotations.get(ep.NETWORK_ID_ANNOTATION) and _created(w) < before]
    held = set()
    for network_id in {w.annotations[ep.NETWORK_ID_ANNOTATION] for w in weps}:
        held |= driver.docker.endpoint_ids(network_id)
    stale = [w for w in weps if w.spec.get("endpoint") not in held]
    for wep in stale:
        LOG.warning("endpoint %s (%s) is gone from dockerd: its container stopped while the "
                    "plugin was down; deleting it", wep.spec["endpoint"][:12],
                    ", ".join(wep.spec.get("ipNetworks") or ()))
        driver.delete_endpoint(wep.annotations[ep.NETWORK_ID_ANNOTATION], wep.spec["endpoint"])
    return [w.spec["endpoint"] for w in stale]


def _created(wep) -> datetime.datetime:
    """Its creationTimestamp; one that does not parse counts as new (kept)."""
    try:
        return datetime.datetime.strptime(wep.metadata.get("creationTimestamp", ""),
                                          "%Y-%m-%dT%H:%M:%SZ").replace(
                                              tzinfo=datetime.timezone.utc)
    except ValueError:
        return datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)
