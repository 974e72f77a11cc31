"""Certificates for TLS tests, made with openssl: a CA, and certificates it
signs for a server (with its subjectAltName) or a client."""

import subprocess
from pathlib import Path
from typing import NamedTuple

from .common import LabError


class Pem(NamedTuple):
    cert: str
    key: str


def _openssl(*args):
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode:
        raise LabError(f"openssl {' '.join(args)}: {result.stderr.strip()}")


def make_ca(directory, name) -> Pem:
    """A self-signed CA `name` in `directory` (name.crt, name.key)."""
    d = Path(directory)
    pem = Pem(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", pem.key, "-out", pem.cert)
    return pem


def make_cert(directory, name, ca: Pem, san=None, usage="clientAuth") -> Pem:
    """A certificate `name` signed by `ca`: for a server, give its san
    ("IP:127.0.0.1") and usage "serverAuth,clientAuth"."""
    d = Path(directory)
    pem = Pem(str(d / f"{name}.crt"), str(d / f"{name}.key"))
    csr, ext = d / f"{name}.csr", d / f"{name}.ext"
    ext.write_text((f"subjectAltName={san}\n" if san else "") + f"extendedKeyUsage={usage}\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", pem.key, "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", ca.cert, "-CAkey", ca.key,
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", pem.cert)
    return pem
