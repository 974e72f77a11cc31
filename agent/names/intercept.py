"""Sending the containers' questions for the host's nameservers to the
responder: one DNAT rule per upstream, to the responder's port for it, in a
table of its own, `ip calico-libnetwork-dns` (apart from the policy table,
so that names work with CALICO_LIBNETWORK_POLICY=false).

The table carries nftables' `owner` flag and is written through
libnftables in this process: the kernel deletes it when the process that
holds the netlink socket ends, a crash or `kill -9` included.  So the
questions are redirected exactly while the responder lives; otherwise they
reach their nameserver as if we were not there.
"""

import ctypes
import ctypes.util
import logging

from agent.errors import KernelError
from agent.names.upstreams import GATEWAY

LOG = logging.getLogger(__name__)

TABLE = "calico-libnetwork-dns"
FAMILY = "ip"


class Nft:
    """One libnftables context, kept open: the owner of our table."""

    def __init__(self):
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise KernelError(f"libnftables is not installed ({exc}); "
                              "install nftables (libnftables1)") from exc
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_error(self.ctx)

    def run(self, script: str) -> None:
        if self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode()):
            error = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode().strip()
            raise KernelError(f"nft: {error.splitlines()[0] if error else 'failed'}")

    def close(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)  # closes the socket: the kernel drops our table
            self.ctx = None


def script(redirects: dict[str, int]) -> str:
    """The whole table: upstream address -> the responder's port for it."""
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t} {{ flags owner; }}", f"flush table {t}",
             f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat; }}"]
    for upstream, port in sorted(redirects.items()):
        for proto in ("udp", "tcp"):
            lines.append(f'add rule {t} prerouting iifname "cali*" ip daddr {upstream} '
                         f"{proto} dport 53 dnat to {GATEWAY}:{port}")
    return "\n".join(lines) + "\n"


class Interception:
    def __init__(self):
        self.nft = None

    def program(self, redirects: dict[str, int]) -> None:
        if self.nft is None:
            self.nft = Nft()
        self.nft.run(script(redirects))

    def remove(self) -> None:
        if self.nft is not None:
            try:
                self.nft.run(f"delete table {FAMILY} {TABLE}\n")
            except KernelError:
                pass
            self.nft.close()
            self.nft = None
