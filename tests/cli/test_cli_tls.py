"""What the commands show when TLS with etcd fails: `status` and `run`'s
start-up name what is wrong and the file to check, without a traceback
(tests/datastore/test_etcd_tls.py has every message)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plugin import startup
from tests.cli.conftest import no_traceback
from tests.lab import EtcdServer
from tests.lab.etcd import EtcdTls

REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def tls_cli(cli, tls_etcd, etcd_pki, monkeypatch):
    """cli against the etcd that requires client certificates; the test sets
    the TLS variables with monkeypatch."""
    monkeypatch.setenv("ETCD_ENDPOINTS", tls_etcd.endpoints)
    for name in ("ETCD_CA_CERT_FILE", "ETCD_CERT_FILE", "ETCD_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return cli


CASES = {
    "no client certificate": (
        lambda p: {"ETCD_CA_CERT_FILE": p["ca"].cert},
        "etcd at {url} refused the TLS handshake: it requires a client certificate and none is "
        "configured: set ETCD_CERT_FILE and ETCD_KEY_FILE"),
    "a client certificate from another CA": (
        lambda p: {"ETCD_CA_CERT_FILE": p["ca"].cert, "ETCD_CERT_FILE": p["rogue"].cert,
                   "ETCD_KEY_FILE": p["rogue"].key},
        "etcd at {url} refused the TLS handshake: it did not accept our client certificate "
        "(ETCD_CERT_FILE={rogue.cert}, ETCD_KEY_FILE={rogue.key}); is that certificate signed "
        "by a CA in etcd's --trusted-ca-file?"),
    "a CA that did not sign the server": (
        lambda p: {"ETCD_CA_CERT_FILE": p["other_ca"].cert, "ETCD_CERT_FILE": p["client"].cert,
                   "ETCD_KEY_FILE": p["client"].key},
        "the TLS handshake with etcd at {url} failed: we do not trust its server certificate "
        "(unable to get local issuer certificate); is it signed by a CA in "
        "ETCD_CA_CERT_FILE={other_ca.cert}?"),
}


def use(case, etcd_pki, tls_etcd, monkeypatch) -> str:
    """Set the case's variables; its message."""
    files, message = CASES[case]
    for name, value in files(etcd_pki).items():
        monkeypatch.setenv(name, value)
    return message.format(url=tls_etcd.endpoints, **etcd_pki)


@pytest.mark.parametrize("case", CASES)
def test_status_says_what_is_wrong(tls_cli, tls_etcd, etcd_pki, monkeypatch, tmp_path, case):
    message = use(case, etcd_pki, tls_etcd, monkeypatch)
    result = tls_cli("status", "--plugin-dir", tmp_path)
    assert result.code == 1
    no_traceback(result)
    assert result.err.startswith(f"calico-libnetwork: unhealthy: {message}\n")


@pytest.mark.parametrize("case", CASES)
def test_run_stops_at_start_saying_what_is_wrong(tls_cli, tls_etcd, etcd_pki, monkeypatch,
                                                 tmp_path, case):
    message = use(case, etcd_pki, tls_etcd, monkeypatch)
    monkeypatch.setattr(startup, "prepare_kernel", lambda config: pytest.fail("got past etcd"))
    result = tls_cli("run", "--no-agent", "--plugin-dir", tmp_path)
    assert result.code == 1
    no_traceback(result)
    assert result.err == f"calico-libnetwork: {message}\n"


def test_status_with_the_right_files_reaches_etcd(tls_cli, etcd_pki, monkeypatch, tmp_path):
    p = etcd_pki
    monkeypatch.setenv("ETCD_CA_CERT_FILE", p["ca"].cert)
    monkeypatch.setenv("ETCD_CERT_FILE", p["client"].cert)
    monkeypatch.setenv("ETCD_KEY_FILE", p["client"].key)
    result = tls_cli("status", "-o", "json", "--plugin-dir", tmp_path)
    etcd = result.json()["etcd"]
    assert etcd["reachable"] is True  # unhealthy: no plugin sockets here
    assert etcd["warnings"] == []  # https, and a certificate is required: as it should be


ADVICE = ("anyone who reaches it can rewrite every policy and address; serve it over https "
          "and require client certificates (README, Security)")


def test_status_warns_of_an_etcd_anyone_reaching_it_may_write(cli, etcd_clean, etcd_pki,
                                                               monkeypatch, tmp_path):
    report = cli("status", "-o", "json", "--plugin-dir", tmp_path).json()
    warning = f"etcd at {etcd_clean.endpoints} is plain http: {ADVICE}"
    assert report["etcd"]["warnings"] == [warning] and warning in report["warnings"]
    result = cli("status", "--plugin-dir", tmp_path)
    assert f"warning: {warning}" in result.out

    p = etcd_pki
    tls = EtcdTls(p["ca"].cert, p["server"].cert, p["server"].key, p["client"].cert,
                  p["client"].key, client_cert_auth=False)
    with EtcdServer(tls=tls) as anyone:
        monkeypatch.setenv("ETCD_ENDPOINTS", anyone.endpoints)
        monkeypatch.setenv("ETCD_CA_CERT_FILE", p["ca"].cert)
        monkeypatch.setenv("ETCD_CERT_FILE", p["client"].cert)
        monkeypatch.setenv("ETCD_KEY_FILE", p["client"].key)
        report = cli("status", "-o", "json", "--plugin-dir", tmp_path).json()
    assert report["etcd"]["warnings"] == [
        f"etcd at {anyone.endpoints} accepts clients without a certificate (no "
        f"--client-cert-auth): {ADVICE}"]


def test_the_message_is_all_a_command_prints(tls_etcd, etcd_pki):
    """In a real process: no traceback, and none of gRPC's own log lines."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETCD", "GRPC", "CALICO", "NODENAME"))}
    env.update(PYTHONPATH=REPO, NODENAME="tls-test", ETCD_ENDPOINTS=tls_etcd.endpoints,
               ETCD_CA_CERT_FILE=etcd_pki["ca"].cert)
    result = subprocess.run([sys.executable, "-m", "plugin.cli", "pool", "list"], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    message = CASES["no client certificate"][1].format(url=tls_etcd.endpoints)
    assert (result.returncode, result.stderr) == (1, f"calico-libnetwork: {message}\n")
