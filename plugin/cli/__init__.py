"""calico-libnetwork's command line.

main.py parses the command line and runs the daemon (`run`, `agent`); each
operating command has its module (pool, apply, get, delete, status,
ipam_show, ipam_gc), built from the helpers: kinds (calicoctl's kind names),
manifests and manifests_v1 (files given with -f), resource_manager
(calicoctl's get/apply/create/delete), output and columns (how answers are
printed), probe (Plugin.Activate on a socket) and errors (CommandError).

May import: plugin, driver, ipam, datastore, kernel, agent (and agent/names for
the names check).  Only the entry points import it.
"""
