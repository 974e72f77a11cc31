"""Calico IPAM, compatible with libcalico-go's records in etcd.

pools.py (IPPools, and their follower Kind POOLS) and pool_cache.py (a
follower's view for the plugin's worker); blocks.py (the AllocationBlock
record, IPAM keys, and the BLOCKS and AFFINITIES kinds); store.py
(compare-and-swap steps on blocks, affinities and the IPAM config);
handles.py; allocator.py (Ipam: auto-assign, assign, release) writing
through group_commit.py (a block and its handles in one transaction);
driver.py (Docker's IpamDriver calls); errors.py.

May import: datastore only (not driver, not plugin).
"""
