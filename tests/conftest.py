"""Shared test setup: markers, a real etcd, and the lab's Docker host fixtures
(tests/lab/fixtures.py: docker_host, docker_host_factory)."""

import contextlib
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

# `tests.lab` must import the same way however pytest was started.
REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from datastore.etcd import Etcd  # noqa: E402
from datastore.resources import Resources  # noqa: E402
from ipam.pool_cache import PoolCache  # noqa: E402
from ipam.pools import build_pool, create_pool  # noqa: E402
from tests.lab import EtcdServer  # noqa: E402
from tests.lab.etcd import ETCD, EtcdTls  # noqa: E402
from tests.lab.tls import make_ca, make_cert  # noqa: E402

pytest_plugins = ["tests.lab.fixtures", "tests.skip_policy"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts real daemons such as dockerd")
    config.addinivalue_line("markers", "require_root: skipped unless run as root")
    config.addinivalue_line("markers", "matrix: runs on every Docker engine of the matrix"
                            " (tests/e2e/conftest.py, scripts/test.sh)")


def pytest_report_header(config):
    """Which dockerd (LAB_DOCKER) and Compose the lab hosts run."""
    from tests.lab.dockerd import versions
    return [f"lab {line}" for line in versions()]


def pytest_runtest_setup(item):
    if item.get_closest_marker("require_root") and os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(scope="session")
def etcd():
    """One etcd on 127.0.0.1 (free port) for the session: `etcd.endpoints`."""
    if not shutil.which(ETCD):
        pytest.skip(f"{ETCD} is not installed (scripts/deps.sh installs it)")
    with EtcdServer() as server:
        yield server


@pytest.fixture
def etcd_client(etcd_clean):
    """A datastore client on an empty etcd; short timeout so outages show quickly."""
    client = Etcd(etcd_clean.endpoints, timeout=2)
    yield client
    client.close()


@pytest.fixture
def resources(etcd_client):
    return Resources(etcd_client)


@pytest.fixture
def pool_cache(etcd_client):
    """A started PoolCache (a quiet watch is replaced after 1 s, not 30)."""
    cache = PoolCache(etcd_client, idle_timeout=1.0).start()
    yield cache
    cache.stop()


@pytest.fixture
def make_pool(resources):
    """make_pool(name, cidr, **options) creates an IP pool as calicoctl would."""
    return lambda name, cidr, **options: create_pool(resources, build_pool(name, cidr, **options))


class EtcdCalls(list):
    """Every etcd round trip (Etcd._call) made since the test began or the
    list was cleared, from any thread: (thread name, Etcd method)."""

    @contextlib.contextmanager
    def during(self):
        """`with etcd_calls.during() as calls:` calls: the Etcd methods of
        the round trips made inside the block."""
        start, calls = len(self), []
        yield calls
        calls.extend(method for _, method in self[start:])


@pytest.fixture
def etcd_calls(monkeypatch):
    made, real_call = EtcdCalls(), Etcd._call

    def counted(self, op, fn):
        made.append((threading.current_thread().name, sys._getframe(1).f_code.co_name))
        return real_call(self, op, fn)
    monkeypatch.setattr(Etcd, "_call", counted)
    return made


@pytest.fixture
def etcd_clean(etcd):
    """The session's etcd, running and empty."""
    if not etcd.running:  # a test may have stopped or killed it
        etcd.start()
    etcd.wipe()
    return etcd


@pytest.fixture(scope="session")
def etcd_pki(tmp_path_factory):
    """Certificates (tests/lab/tls.py Pem: .cert, .key paths): "ca" signs the
    "server" (127.0.0.1) and the "client"; "other_ca" signs "rogue", a client
    certificate etcd does not trust; "garbage" is a file that is not PEM."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca(d, "ca"), make_ca(d, "other-ca")
    garbage = d / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {
        "ca": ca, "other_ca": other_ca, "garbage": str(garbage),
        "server": make_cert(d, "server", ca, san="IP:127.0.0.1", usage="serverAuth,clientAuth"),
        "client": make_cert(d, "client", ca),
        "rogue": make_cert(d, "rogue", other_ca),
    }


@pytest.fixture(scope="session")
def tls_etcd(etcd_pki):
    """An etcd serving https with etcd_pki's server certificate and requiring
    client certificates signed by its CA (--client-cert-auth)."""
    if not shutil.which(ETCD):
        pytest.skip(f"{ETCD} is not installed (scripts/deps.sh installs it)")
    p = etcd_pki
    with EtcdServer(tls=EtcdTls(p["ca"].cert, p["server"].cert, p["server"].key,
                                p["client"].cert, p["client"].key)) as server:
        yield server
