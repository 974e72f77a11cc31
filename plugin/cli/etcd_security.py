"""`status`'s look at how etcd is guarded: whoever reaches an etcd served
over plain http, or over https to clients without a certificate, reads and
rewrites every Calico resource (README, "Security").  The second is probed:
a request with the CA alone, no client certificate."""

from contextlib import closing
from dataclasses import replace

from datastore.errors import DatastoreError
from datastore.settings import EtcdSettings, connect

_ADVICE = ("anyone who reaches it can rewrite every policy and address; serve it over https "
           "and require client certificates (README, Security)")


def warnings(settings: EtcdSettings, timeout: float) -> list[str]:
    found = []
    for url in settings.endpoints:
        if url.startswith("http://"):
            found.append(f"etcd at {url} is plain http: {_ADVICE}")
        elif _accepts_anonymous(replace(settings, endpoints=(url,), cert_file=None,
                                        key_file=None, timeout=timeout)):
            found.append(f"etcd at {url} accepts clients without a certificate (no "
                         f"--client-cert-auth): {_ADVICE}")
    return found


def _accepts_anonymous(settings: EtcdSettings) -> bool:
    try:
        with closing(connect(settings)) as etcd:
            etcd.revision()
        return True
    except DatastoreError:  # refused (what we want), or unreachable: nothing to tell
        return False
