# The calico-libnetwork image: the root file system of the managed plugin
# (scripts/build-plugin.sh turns it into one), or a plain container:
#   docker run -d --net host --cap-add NET_ADMIN -v /run/docker/plugins:/run/docker/plugins \
#     -v /var/run/docker.sock:/var/run/docker.sock -e ETCD_ENDPOINTS=... IMAGE
#
# Build args:
#   BASE  the base image (default python:3.11-slim-bookworm). It must hold
#         python3 >= 3.11 with its venv module (ensurepip); nothing else is
#         assumed: no pip binary, no apt lists. The tests use a Debian 12
#         minbase made with debootstrap and `docker import` (tests/lab/baseimage.py).
#
# Build context, either
#   * what scripts/build-plugin.sh prepares (no network needed at build time):
#       wheels/  `pip wheel` of this project and its pinned dependencies, made
#                for the base's Python (3.11) on the build host
#       debs/    iptables, nftables, bird2 and the Debian packages they need
#                (`apt-get download` on a Debian 12 build host); only those the
#                base lacks are installed. The plugin calls iptables to accept
#                cali traffic in FORWARD (dockerd's policy there is DROP), the
#                node agent enforces policy with nft and, with
#                CALICO_NETWORKING_BACKEND=bird, runs BIRD 2.
#   * or the repository root (.dockerignore keeps it small): wheels are then
#     built here from PyPI, and iptables, nftables and bird2 come from the base's apt mirror.
#
# iproute2 is not installed: the plugin uses netlink through pyroute2.

ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
COPY . /src
RUN set -eu; \
    if ! ls /src/wheels/*.whl >/dev/null 2>&1; then \
        python3 -m venv /tmp/wheel-builder; \
        /tmp/wheel-builder/bin/pip wheel -q --disable-pip-version-check -w /src/wheels /src; \
    fi; \
    python3 -m venv /opt/calico-libnetwork; \
    /opt/calico-libnetwork/bin/python -m pip install -q --disable-pip-version-check \
        --no-index --find-links /src/wheels calico-libnetwork; \
    /opt/calico-libnetwork/bin/python -m pip uninstall -q -y pip setuptools; \
    mkdir /debs; \
    for deb in /src/debs/*.deb; do \
        [ -e "$deb" ] || continue; \
        pkg=$(dpkg-deb -f "$deb" Package); \
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' \
            || cp "$deb" /debs/; \
    done

FROM ${BASE}
COPY --from=build /debs /tmp/debs
# policy-rc.d: bird2's install script must not start Debian's BIRD service
# (the node agent runs BIRD itself).
RUN set -eu; \
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; \
    if ls /tmp/debs/*.deb >/dev/null 2>&1; then \
        dpkg -i /tmp/debs/*.deb >/dev/null; \
    elif ! command -v iptables >/dev/null || ! command -v nft >/dev/null \
            || ! command -v bird >/dev/null; then \
        apt-get update -qq; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables nftables bird2 >/dev/null; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -rf /tmp/debs /var/cache/debconf/*-old /var/lib/dpkg/*-old /usr/sbin/policy-rc.d; \
    command -v iptables >/dev/null; command -v nft >/dev/null; command -v bird >/dev/null; \
    mkdir -p /run/docker/plugins
COPY --from=build /opt/calico-libnetwork /opt/calico-libnetwork
# A managed plugin runs with PATH=/usr/local/sbin:/usr/local/bin:... and the
# entrypoint of config.json, not this image's ENV and ENTRYPOINT.
RUN ln -s /opt/calico-libnetwork/bin/calico-libnetwork /usr/local/bin/calico-libnetwork \
    && calico-libnetwork --version
ENTRYPOINT ["calico-libnetwork", "run"]
