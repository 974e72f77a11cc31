"""The node agent (`calico-libnetwork agent`, a child of `run`).

main.py starts it: node.py registers the Node (address from autodetect.py,
liveness.py's heartbeat), and one datastore Follower feeds its views:
routing/ (routes, VXLAN, IPIP, NAT between hosts), policy/, names/ and
published.py (this host's published ports, `docker run -p`, as DNAT).
antispoofing.py keeps the reverse-path table; nftables.py is libnftables;
status.py reads the peers for `calico-libnetwork status`; metrics.py is the
cluster metrics view and serves the node's /metrics; settings.py, errors.py.

May import: ipam (pools, blocks, the allocator for its tunnel address),
datastore, kernel (netlink, KernelError) and metrics; policy/ and names/ only from
main.py.  Not driver, not plugin.
"""
