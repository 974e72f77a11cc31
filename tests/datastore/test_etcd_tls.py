"""TLS with a real etcd that requires client certificates: each way the
handshake fails is reported as what is wrong and which file to check, at
once (no retrying until the timeout), as an EtcdTlsError (a
DatastoreUnavailable: the commands show it without a traceback).  The
certificates and the etcd requiring them are tests/conftest.py's etcd_pki
and tls_etcd."""

import time

import pytest

from datastore.errors import DatastoreUnavailable, EtcdTlsError
from datastore.etcd import Etcd


def attempt(url, **files):
    """The error reading from etcd with these files, and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(EtcdTlsError) as failure:
        client = Etcd(url, timeout=3, **files)
        try:
            client.revision()
        finally:
            client.close()
    assert isinstance(failure.value, DatastoreUnavailable)
    return str(failure.value), time.monotonic() - start


def test_the_right_files_connect(tls_etcd, etcd_pki):
    client = Etcd(tls_etcd.endpoints, ca_cert=etcd_pki["ca"].cert, cert=etcd_pki["client"].cert,
                  key=etcd_pki["client"].key)
    try:
        assert client.put("/calico/tls-test", "x") > 0
    finally:
        client.close()


def test_no_client_certificate(tls_etcd, etcd_pki):
    message, seconds = attempt(tls_etcd.endpoints, ca_cert=etcd_pki["ca"].cert)
    assert message == (
        f"etcd at {tls_etcd.endpoints} refused the TLS handshake: it requires a client "
        "certificate and none is configured: set ETCD_CERT_FILE and ETCD_KEY_FILE")
    assert seconds < 2  # not retried until the timeout


def test_a_client_certificate_from_another_ca(tls_etcd, etcd_pki):
    rogue = etcd_pki["rogue"]
    message, seconds = attempt(tls_etcd.endpoints, ca_cert=etcd_pki["ca"].cert, cert=rogue.cert,
                               key=rogue.key)
    assert message == (
        f"etcd at {tls_etcd.endpoints} refused the TLS handshake: it did not accept our client "
        f"certificate (ETCD_CERT_FILE={rogue.cert}, ETCD_KEY_FILE={rogue.key}); is that "
        "certificate signed by a CA in etcd's --trusted-ca-file?")
    assert seconds < 2


def test_a_ca_file_that_does_not_sign_the_server(tls_etcd, etcd_pki):
    client = etcd_pki["client"]
    message, seconds = attempt(tls_etcd.endpoints, ca_cert=etcd_pki["other_ca"].cert,
                               cert=client.cert, key=client.key)
    assert message == (
        f"the TLS handshake with etcd at {tls_etcd.endpoints} failed: we do not trust its "
        "server certificate (unable to get local issuer certificate); is it signed by a CA in "
        f"ETCD_CA_CERT_FILE={etcd_pki['other_ca'].cert}?")
    assert seconds < 2


def test_a_name_the_server_certificate_is_not_for(tls_etcd, etcd_pki):
    url = tls_etcd.endpoints.replace("127.0.0.1", "localhost")
    client = etcd_pki["client"]
    message, _ = attempt(url, ca_cert=etcd_pki["ca"].cert, cert=client.cert, key=client.key)
    assert message == (
        f"the TLS handshake with etcd at {url} failed: its server certificate is not issued "
        "for localhost; use a name or address from the certificate's subjectAltName in "
        "ETCD_ENDPOINTS")


def test_https_to_an_etcd_serving_http(etcd, etcd_pki):
    url = etcd.endpoints.replace("http://", "https://")
    client = etcd_pki["client"]
    message, _ = attempt(url, ca_cert=etcd_pki["ca"].cert, cert=client.cert, key=client.key)
    assert message == (f"etcd at {url} closed the connection during the TLS handshake: does it "
                       "serve https? (ETCD_ENDPOINTS)")


def test_http_to_an_etcd_serving_https(tls_etcd):
    url = tls_etcd.endpoints.replace("https://", "http://")
    with pytest.raises(DatastoreUnavailable) as failure:
        client = Etcd(url, timeout=1)
        try:
            client.revision()
        finally:
            client.close()
    assert "if etcd serves https, use https:// in ETCD_ENDPOINTS" in str(failure.value)


@pytest.mark.parametrize("files, message", [
    (lambda p: dict(ca_cert=p["garbage"]),
     "cannot use ETCD_CA_CERT_FILE={garbage} as the CA for etcd: no certificate or crl found "
     "(expected PEM certificates)"),
    (lambda p: dict(ca_cert=p["ca"].cert, cert=p["client"].cert, key=p["rogue"].key),
     "cannot use the client certificate (ETCD_CERT_FILE={client.cert}, "
     "ETCD_KEY_FILE={rogue.key}): key values mismatch (expected a PEM certificate and its "
     "unencrypted PEM key)"),
    (lambda p: dict(ca_cert=p["ca"].cert, cert=p["garbage"], key=p["client"].key),
     "cannot use the client certificate (ETCD_CERT_FILE={garbage}, "
     "ETCD_KEY_FILE={client.key}): not PEM (expected a PEM certificate and its unencrypted "
     "PEM key)"),
    # gRPC would abort the process on a certificate without its key.
    (lambda p: dict(ca_cert=p["ca"].cert, cert=p["client"].cert),
     "ETCD_CERT_FILE and ETCD_KEY_FILE go together: set both (a client certificate and its "
     "key) or neither (ETCD_CERT_FILE={client.cert}, ETCD_KEY_FILE=(not set))"),
])
def test_unusable_files_are_named_before_connecting(etcd_pki, files, message):
    with pytest.raises(EtcdTlsError) as failure:
        Etcd("https://127.0.0.1:9", **files(etcd_pki))
    assert str(failure.value) == message.format(**etcd_pki)
