"""Routing between hosts: the first of the agent follower's views.

model.py holds the ClusterState (Nodes, pools, block affinities, blocks),
the view, which hands itself to the Reconciler after each batch;
routes.py computes the desired routes, VXLAN neighbours and tunnel devices
from it; reconciler.py programs them through kernel.py (netlink routes),
vxlan.py, ipip.py and nat.py (outgoing NAT), and resyncs them periodically;
its Ipam (the VXLAN tunnel addresses) takes the ClusterState's pools.

May import: agent (errors), ipam, datastore and kernel.
"""
