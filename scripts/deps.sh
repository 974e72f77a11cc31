#!/usr/bin/env bash
# Install what the plugin and its tests need on Debian 12, as root, and
# create <repo>/.venv with the project installed (editable, with test extras).
# Then fetches the newer Docker engines the tests also run on (Compose v2 comes
# with 26): scripts/docker-versions.sh 26, 28 (the quick-start test runs on it,
# tests/e2e/test_quickstart.py) and those in LAB_DOCKER_MATRIX.
# Idempotent and quick when nothing changed. Run it, or source it.
#   CI=true  always refresh the apt package lists and re-run apt-get install.

_calico_deps() (  # a subshell: when sourced, set -e, cd and variables stay in here
    set -euo pipefail
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    # debian-archive-keyring: its bookworm update holds Debian 13's keys, which
    # scripts/docker-versions.sh needs.
    packages=(docker.io docker-registry etcd-server etcd-client busybox-static iptables nftables iproute2
              python3-venv debootstrap debian-archive-keyring openssl systemd bird2)
    missing=()
    for pkg in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$pkg")
    done

    if [ "${CI:-}" = true ] || [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
        # The tests run their own dockerd and etcd; system-wide ones would put
        # docker0 and iptables rules in the root namespace. policy-rc.d tells
        # the packages' install scripts not to start them.
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod +x "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        echo "deps: apt-get update"
        apt-get update -qq
        echo "deps: apt-get install ${missing[*]:-(all present)}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${packages[@]}" >/dev/null
    fi

    if [ ! -x .venv/bin/python ]; then
        echo "deps: creating .venv"
        python3 -m venv .venv
    fi
    stamp=.venv/.deps-stamp
    if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "deps: pip install -e '.[test]'"
        .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
        touch "$stamp"
    fi
    # shellcheck disable=SC2086  # a list of engine versions
    bash scripts/docker-versions.sh $(printf '%s\n' 26 28 ${LAB_DOCKER_MATRIX:-} | sort -u)
    echo "deps: ready"
)

_calico_deps
