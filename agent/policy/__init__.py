"""Policy in the node agent: Profiles, GlobalNetworkPolicies, host
endpoints and FelixConfiguration enforced in our nftables table.

state.py holds the records from etcd; compiler.py turns them into chains,
with guarded.py's datastore guard; membership.py keeps each selector's
addresses; tunnels.py admits VXLAN and IPIP from the Calico hosts only;
nft.py writes the table (whole, then by difference); engine.py is the view
the agent's follower feeds.

May import: agent (nftables, routing's kernel), datastore, ipam's pools
(the IPPool kind) and kernel.  Not agent/names, driver or plugin.
"""
