"""Calico IPAM, compatible with libcalico-go's records in etcd.

pools.py (IPPools) and pool_cache.py (a watched copy for the plugin's
worker); blocks.py (the AllocationBlock record and IPAM keys); store.py
(compare-and-swap steps on blocks, affinities and the IPAM config);
handles.py; allocator.py (Ipam: auto-assign, assign, release) writing
through group_commit.py (a block and its handles in one transaction);
driver.py (Docker's IpamDriver calls); errors.py.

May import: datastore only (not driver, not plugin).
"""
