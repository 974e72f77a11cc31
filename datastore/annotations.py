"""Annotations this plugin writes on WorkloadEndpoints beyond Calico's own:
written by the driver, read by the node agents of every host."""

# The Docker network's name, and the names Docker's DNS answers for the
# endpoint on it (a JSON list).
NETWORK_NAME = "libnetwork.projectcalico.org/network-name"
DNS_NAMES = "libnetwork.projectcalico.org/dns-names"
# The host ports published to the endpoint (`docker run -p`), a JSON list
# (datastore/ports.py): Calico v3's WorkloadEndpoint has no field for them.
PUBLISHED_PORTS = "libnetwork.projectcalico.org/published-ports"
