"""Docker's NetworkDriver for Calico.

network_driver.py answers the calls; the records it keeps in etcd:
endpoints.py (WorkloadEndpoints and network profiles), networks.py
(NetworkID -> name), sandboxes.py (one Calico network per container),
holders.py (which endpoint holds an address), published.py (the host
ports `docker run -p` asks for, checked and chosen); the host side in the kernel:
dataplane.py (veths, routes, proxy ARP; netlink through kernel/), forwarding.py (dockerd's
FORWARD), reaper.py (veth deletion); docker_api.py (calls into dockerd);
endpoint_sweep.py (the pass after a start over older endpoints).

May import: datastore and kernel (not ipam, not plugin).
"""
