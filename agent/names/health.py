"""The responder's health as the names watchdog sees it: a small JSON file
the watchdog rewrites at each change (never on a timer, with
agent/status_file.py), read by `status`, `check` and the metrics through
responder_health()."""

import json


def responder_health(path: str) -> dict:
    """What the watchdog last saw, as a dict:

    - answering: True (the responder answers its probes and containers'
      questions are intercepted), False (it does not: since `since`, they go
      straight to their nameservers), None (no watchdog runs: no agent, or
      names are off; nothing is intercepted then either);
    - since: when `answering` last changed (seconds since the epoch);
    - intercepted: the nameservers whose questions go to the responder now;
    - withdrawals: how often the watchdog took the interception away;
    - error: why the file could not be read, if it could not.
    """
    try:
        with open(path) as f:
            health = json.load(f)
    except FileNotFoundError:
        return {"answering": None, "since": None, "intercepted": [], "withdrawals": 0}
    except (OSError, ValueError) as exc:
        return {"answering": None, "since": None, "intercepted": [], "withdrawals": 0,
                "error": f"{path}: {exc}"}
    if not _alive(health.get("pid")):  # a watchdog killed with its agent leaves its file
        health.update(answering=None, intercepted=[])
    return health


def _alive(pid) -> bool:
    """Whether process pid runs (a zombie does not: its table is gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
