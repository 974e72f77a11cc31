"""etcd v3 and Calico's v3 data model: the bottom layer.

etcd.py is the only module that talks to the etcd client (transactions,
watches with an idle timeout); settings.py opens it; retry.py bounds
compare-and-swap retries and holds the one backoff; bounded.py is the
bounded, thread-safe dict for a process's hints about records in etcd
(ipam's known handles, the driver's endpoints); resources.py stores v3
resources (keys, JSON, get/create/modify/delete); follower.py is the one
loop that follows etcd (snapshot, watch, idle timeout, backoff, resuming
from its revision) for its views, handing them records.py's records, each
key parsed once by its Kind; policy.py, selector.py, host_endpoint.py,
felix_configuration.py, workload_endpoint.py and node.py parse (and
check) the records the agent reads; ports.py is a published port (an endpoint's host port binding);
annotations.py names the annotations the plugin writes; errors.py.

May import: nothing of this project.
"""
