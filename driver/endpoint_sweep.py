"""After a start: this node's endpoints written before it, against what
dockerd holds.

Those dockerd still holds get what this version keeps on a WorkloadEndpoint
and the version that wrote them may not have: their DNS names, network name
and (when labelling) container labels, which are otherwise written only
after a Join this process answers.  Containers that kept running through an
upgrade from a version that wrote no names get them this way, as soon as
dockerd answers.  (The sandbox claim is the same in every release; the host
end's 169.254.1.1 is given at `run`, see plugin/startup.py.)

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
from datastore.retry import Backoff
from driver import endpoints as ep
from driver.errors import DockerUnavailable

LOG = logging.getLogger(__name__)

# By then a container that was starting when the plugin died has joined (or
# failed, and dockerd deleted its endpoint).
SETTLE_SECONDS = 60.0
GIVE_UP_SECONDS = 600.0  # dockerd or etcd still not answering: leave it


def after_start(driver, started: datetime.datetime) -> None:
    """complete() as soon as dockerd answers, then sweep() once things
    settled, each retried while dockerd or etcd do not answer (a thread's
    target)."""
    settled = time.monotonic() + SETTLE_SECONDS
    _until_answered(lambda: complete(driver, started),
                    "write the DNS names of the endpoints joined before the start")
    time.sleep(max(0.0, settled - time.monotonic()))
    _until_answered(lambda: sweep(driver, started), "look for endpoints dockerd no longer has")


def _until_answered(step, what: str) -> None:
    deadline, backoff = time.monotonic() + GIVE_UP_SECONDS, Backoff(1.0, 30.0)
    while True:
        try:
            step()
            return
        except (DockerUnavailable, DatastoreError) as exc:
            if time.monotonic() > deadline:
                LOG.warning("did not %s: %s", what, exc)
                return
        time.sleep(backoff.next())


def complete(driver, started: datetime.datetime) -> list[str]:
    """Record the DNS names, network name and labels of this node's
    endpoints created before `started` that have no DNS names yet and that
    dockerd holds, each in one compare-and-swap on the endpoint as stored
    (an endpoint deleted meanwhile is left deleted); their ids.  Raises
    DockerUnavailable (having written nothing) when dockerd does not answer."""
    weps, held = _held(driver, started)
    done = []
    for wep in weps:
        endpoint_id = wep.spec.get("endpoint")
        if endpoint_id not in held or ep.DNS_NAMES_ANNOTATION in wep.annotations:
            continue
        container = driver.docker.endpoint_container(
            wep.annotations[ep.NETWORK_ID_ANNOTATION], endpoint_id)
        if container is None:  # removed since, or dockerd stopped answering: next start
            continue
        if driver.record_container(endpoint_id, container):
            done.append(endpoint_id)
    if done:
        LOG.info("recorded the DNS names of %d endpoint(s) joined before this start",
                 len(done))
    return done


def sweep(driver, started: datetime.datetime) -> list[str]:
    """Delete this node's endpoints created before `started` that dockerd
    holds on none of their networks; their ids.  Raises DockerUnavailable
    (having deleted nothing) when dockerd does not answer."""
    weps, held = _held(driver, started)
    stale = [w for w in weps if w.spec.get("endpoint") not in held]
    for wep in stale:
        LOG.warning("endpoint %s (%s) is gone from dockerd: its container stopped while the "
                    "plugin was down; deleting it", wep.spec["endpoint"][:12],
                    ", ".join(wep.spec.get("ipNetworks") or ()))
        driver.delete_endpoint(wep.annotations[ep.NETWORK_ID_ANNOTATION], wep.spec["endpoint"])
    return [w.spec["endpoint"] for w in stale]


def _held(driver, started: datetime.datetime):
    """This node's endpoints created before `started` (with a second's
    margin: creation times have whole seconds), and the ids of the
    endpoints dockerd holds on their networks."""
    node = driver.settings.nodename
    before = started.replace(microsecond=0) - datetime.timedelta(seconds=1)
    weps = [w for w in ep.node_weps(driver.resources, node)
            if w.annotations.get(ep.NETWORK_ID_ANNOTATION) and created(w) < before]
    held = set()
    for network_id in {w.annotations[ep.NETWORK_ID_ANNOTATION] for w in weps}:
        held |= driver.docker.endpoint_ids(network_id)
    return weps, held


def created(wep) -> datetime.datetime:
    """Its creationTimestamp; one that does not parse counts as new (kept)."""
    try:
        return datetime.datetime.strptime(wep.metadata.get("creationTimestamp", ""),
                                          "%Y-%m-%dT%H:%M:%SZ").replace(
                                              tzinfo=datetime.timezone.utc)
    except ValueError:
        return datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)
