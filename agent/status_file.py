"""The agent's status files (policy, names, BIRD, the names watchdog's
health), which `calico-libnetwork status`, `check` and the metrics read:
JSON, replaced atomically so that a reader never sees half of one."""

import json
import os


def write_status(path: str, status: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    # Named by process: an agent and the watchdog it restarts never share one.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)
