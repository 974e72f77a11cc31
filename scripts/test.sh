#!/usr/bin/env bash
# THE command that runs the whole test suite, from any directory:
#   bash scripts/test.sh [pytest args]
# Installs what is missing (scripts/deps.sh, which also fetches the newer
# Docker engines: scripts/docker-versions.sh), lints the tree with ruff (any
# finding fails the run before a test starts), then runs pytest from the repo
# root once per Docker engine of the matrix, with the same args:
#   1. the lab's default engine, Debian 12's dockerd 20.10 (or LAB_DOCKER's):
#      every test;
#   2. each engine of LAB_DOCKER_MATRIX (default "26"; e.g. "26 28", or ""
#      for none), as LAB_DOCKER=<engine>: the tests marked `matrix`, the
#      end-to-end modules that run in lab hosts (tests/e2e/conftest.py),
#      at the same time as run 1.
# A summary line per run ends the output. Exit code: 0 when every run passed,
# else the first failing run's pytest code; "no tests collected" (5) counts
# as failure in run 1 and as nothing to do in the others.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LAB_DOCKER_MATRIX=${LAB_DOCKER_MATRIX-26}
bash scripts/deps.sh
if ! .venv/bin/ruff check .; then
    echo "test.sh: ruff check failed (rules: [tool.ruff] in pyproject.toml)" >&2
    exit 1
fi

engine_version() {  # engine_version [MAJOR]: what its dockerd says it is
    local dockerd=/usr/sbin/dockerd
    [ -z "$1" ] || dockerd=${LAB_DOCKER_CACHE:-/opt/calico-libnetwork-test}/docker-$1/usr/sbin/dockerd
    case $1 in /*) dockerd=$1/usr/sbin/dockerd ;; esac
    "$dockerd" --version 2>/dev/null | sed 's/^Docker version \([^,+]*\).*/dockerd \1/' \
        || echo "dockerd ${1:-?} (not installed)"
}

# The engines' runs go side by side: most of an end-to-end test's time is
# waiting on dockerd, so two runs take little longer than the longer one.
# Run 1 prints as it goes; the others' output follows it, whole.
logs=$(mktemp -d /tmp/calico-test.XXXXXX)
trap 'rm -rf "$logs"' EXIT
run() {  # run ENGINE WHAT [pytest args]: one pytest run; its summary line in $logs/ENGINE.summary
    local engine=$1 what=$2 code=0 started=$SECONDS; shift 2
    local name; name=$(engine_version "$engine")
    if [ -n "$engine" ]; then name+=" (LAB_DOCKER=$engine)"; else name+=" (Debian 12)"; fi
    local out=$logs/${engine:-default}.out
    echo "==== test.sh: $name: $what ====" >"$out"
    if [ "$engine" = "${LAB_DOCKER:-}" ]; then
        cat "$out"
        LAB_DOCKER=$engine .venv/bin/python -m pytest -p no:cacheprovider -q "$@" 2>&1 \
            | tee -a "$out" || code=${PIPESTATUS[0]}
    else
        LAB_DOCKER=$engine .venv/bin/python -m pytest -p no:cacheprovider -q "$@" >>"$out" 2>&1 \
            || code=$?
    fi
    local result; result=$(grep -E '^=* ?[0-9]+ (passed|failed|errors?|skipped|deselected)' "$out" \
        | tail -1 | sed 's/^=* *//; s/ *=*$//')
    echo "$name, $what: ${result:-no result} (exit $code, $((SECONDS - started)) s)" \
        >"$logs/${engine:-default}.summary"
    return "$code"
}

engines=() pids=()
for engine in $LAB_DOCKER_MATRIX; do
    [ "$engine" != "${LAB_DOCKER:-}" ] || continue
    engines+=("$engine")
    ( code=0
      run "$engine" "tests marked matrix" -m matrix "$@" || code=$?
      [ "$code" != 5 ] || code=0
      exit "$code" ) &
    pids+=($!)
done
code=0
run "${LAB_DOCKER:-}" "every test" "$@" || code=$?
if [ "$code" = 5 ]; then
    echo "test.sh: no tests were collected" >&2
    code=1
fi
rc=$code
for pid in "${pids[@]}"; do
    code=0
    wait "$pid" || code=$?
    [ "$rc" != 0 ] || rc=$code
done
for engine in "${engines[@]}"; do
    cat "$logs/$engine.out"
done

echo "==== test.sh: summary ===="
cat "$logs/${LAB_DOCKER:-default}.summary"
for engine in "${engines[@]}"; do
    cat "$logs/$engine.summary"
done
exit "$rc"
