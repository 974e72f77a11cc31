"""calico-libnetwork's command line.

entry.py is the command's entry point: `agent` runs with agent_command.py
alone (the node agent's process loads no web server or Docker client),
everything else through main.py, which parses the command line and runs
the daemon (`run`); command.py is how each ends (configuration, logging, a
user's mistake in one line).  Each operating command has its module (pool,
apply, get, delete, status, ipam_show, ipam_gc), built from the helpers:
kinds (calicoctl's kind names), manifests and manifests_v1 (files given
with -f), resource_manager (calicoctl's get/apply/create/delete), output
and columns (how answers are printed), probe (Plugin.Activate on a socket)
and errors (CommandError).

May import: plugin, driver, ipam, datastore, kernel, agent (and agent/names for
the names check).  Only the entry points import it.
"""
