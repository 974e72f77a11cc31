"""The node agent (`calico-libnetwork agent`, a child of `run`).

main.py starts it: node.py registers the Node (address from autodetect.py,
liveness.py's heartbeat), watch.py's Syncer follows etcd into model.py's
ClusterState and the views.  Routing: reconciler.py programs what
desired_routes.py computes, through kernel.py, vxlan.py, ipip.py and nat.py.
antispoofing.py keeps the reverse-path table; nftables.py is libnftables;
status.py reads the peers for `calico-libnetwork status`; settings.py,
errors.py.  policy/ and names/ are the other views.

May import: ipam (pools, blocks, the allocator for its tunnel address) and
datastore; policy/ and names/ only from main.py.  Not driver, not plugin.
"""
