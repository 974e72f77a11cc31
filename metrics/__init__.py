"""Prometheus metrics (CALICO_LIBNETWORK_PROMETHEUS_PORT).

instruments.py holds what the request path, the etcd client and the agent
count (no-ops until enabled); summary.py a Summary with quantiles, as
Felix's; exposition.py the one listener and the merge of every process's
figures into one answer.  Which process counts what and which one serves:
plugin/metrics.py (run and its gunicorn workers), agent/metrics.py.

May import: prometheus_client only.  Imported by datastore, agent, plugin.
"""
