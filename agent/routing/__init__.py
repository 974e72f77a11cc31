"""Routing between hosts: the agent's first view of etcd.

model.py holds the ClusterState (Nodes, pools, block affinities, blocks);
routes.py computes the desired routes, VXLAN neighbours and tunnel devices
from it; reconciler.py programs them through kernel.py (netlink routes),
vxlan.py, ipip.py and nat.py (outgoing NAT), and resyncs them periodically.

May import: agent (errors), ipam and datastore.
"""
