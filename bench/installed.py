"""The repository's modules as a pip-installed package has them: compiled
once, not again at every start.  A bench that times a process's start
would otherwise time Python compiling our sources, 0.2-0.3 s of it, where
PYTHONDONTWRITEBYTECODE is set (as in this project's sandbox)."""

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def _compiled() -> str:
    prefix = os.path.join(tempfile.gettempdir(), "calico-libnetwork-bench-pycache")
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-x", r"/(\.venv|\.git|tests)/",
                    str(REPO)], env={**os.environ, "PYTHONPYCACHEPREFIX": prefix}, check=True)
    return prefix


def as_installed(env: dict) -> dict:
    """env for a process of ours that reads its modules compiled."""
    env = {**env, "PYTHONPYCACHEPREFIX": _compiled()}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
