"""The agent's status files, which `calico-libnetwork status` reads: JSON,
replaced atomically so that a reader never sees half of one."""

import json
import os


def write_status(path: str, status: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)
