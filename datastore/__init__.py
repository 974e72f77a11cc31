"""etcd v3 and Calico's v3 data model: the bottom layer.

etcd.py is the only module that talks to the etcd client (transactions,
watches with an idle timeout); settings.py opens it; retry.py bounds
compare-and-swap retries and holds the one backoff; resources.py stores v3
resources (keys, JSON, get/create/modify/delete); policy.py, selector.py, host_endpoint.py and
felix_configuration.py parse and check the resources policy reads;
annotations.py names the annotations the plugin writes; errors.py.

May import: nothing of this project.
"""
