"""Names across hosts: the node agent answers, for the containers of this
host, the names of every container of the same network on any host, and
forwards every other question to the server the container was asking.

service.py starts it; index.py is the view the agent's follower feeds
(names from WorkloadEndpoints' annotations), sharded by shards.py;
responder.py answers on 169.254.1.1; intercept.py redirects containers'
questions to it (nftables), held by watchdog.py in a child process
(watchdog_process.py) that takes it away while the responder does not
answer and says so in health.py's file; upstreams.py finds the servers to
forward to.

May import: agent (nftables), datastore and kernel.  Not agent/policy,
ipam, driver or plugin.
"""
