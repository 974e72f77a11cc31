#!/usr/bin/env bash
# THE command that runs the whole test suite, from any directory:
#   bash scripts/test.sh [pytest args]
# Installs what is missing (scripts/deps.sh), lints the tree with ruff (any
# finding fails the run before a test starts), then runs pytest from the repo
# root. Exit code: pytest's, except "no tests collected" (5) counts as failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/deps.sh
if ! .venv/bin/ruff check .; then
    echo "test.sh: ruff check failed (rules: [tool.ruff] in pyproject.toml)" >&2
    exit 1
fi
rc=0
.venv/bin/python -m pytest -p no:cacheprovider -q "$@" || rc=$?
if [ "$rc" = 5 ]; then
    echo "test.sh: no tests were collected" >&2
    rc=1
fi
exit "$rc"
