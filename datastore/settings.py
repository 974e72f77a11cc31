"""How to reach etcd, and the one function that opens a client from it."""

from dataclasses import dataclass

from datastore.etcd import Etcd


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    ca_cert_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = 3.0


def connect(settings: EtcdSettings) -> Etcd:
    """A new client; close it when done.  Create it after fork."""
    return Etcd(list(settings.endpoints), ca_cert=settings.ca_cert_file,
                cert=settings.cert_file, key=settings.key_file, timeout=settings.timeout)
