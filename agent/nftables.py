"""nftables through libnftables, in this process: nft's own parser and
netlink transactions without a fork and exec of nft for each change.  A
script runs as `nft -f` runs it: one transaction, all of it or nothing.

libnftables comes with nft itself (Debian's nftables package depends on
libnftables1, which the plugin image installs with it), so there is no
fallback to the nft program.
"""

import ctypes
import ctypes.util
import functools
import os
import threading
import weakref

from kernel.errors import KernelError

# libnftables does not say that two contexts may run at once; a transaction
# takes milliseconds, so the policy engine and the interception take turns.
_LOCK = threading.Lock()
_ERROR_LINES = 6


@functools.cache
def library() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise KernelError(f"libnftables is not installed ({exc}); "
                          "install nftables (libnftables1)") from exc
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    for buffer in ("error", "output"):
        getattr(lib, f"nft_ctx_buffer_{buffer}").argtypes = [ctypes.c_void_p]
        getattr(lib, f"nft_ctx_get_{buffer}_buffer").restype = ctypes.c_char_p
        getattr(lib, f"nft_ctx_get_{buffer}_buffer").argtypes = [ctypes.c_void_p]
    return lib


def available() -> bool:
    try:
        library()
        return True
    except KernelError:
        return False


class NftContext:
    """One libnftables context.  Its netlink socket is opened in the network
    namespace of the thread that makes it, and a table flagged `owner` lives
    as long as the context does (close, or the end of the process)."""

    def __init__(self):
        lib = self.lib = library()
        self.ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_error(self.ctx)
        lib.nft_ctx_buffer_output(self.ctx)  # `list` output is not ours to print
        self._free = weakref.finalize(self, lib.nft_ctx_free, self.ctx)

    def run(self, script: str) -> str:
        """Run a script; its output (of `list` commands).  KernelError with
        nft's first error lines when it is refused."""
        # Read from a file, not from a buffer: libnftables 1.0 then quotes
        # the failing line in its error, not the script's first line.
        fd = os.memfd_create("nft-script", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
        try:
            data = script.encode()
            while data:
                data = data[os.write(fd, data):]
            with _LOCK:
                failed = self.lib.nft_run_cmd_from_filename(self.ctx, path.encode())
                # Both, every time: libnftables appends to a buffer until it is read.
                output = self.lib.nft_ctx_get_output_buffer(self.ctx) or b""
                error = self.lib.nft_ctx_get_error_buffer(self.ctx) or b""
        finally:
            os.close(fd)
        if failed:
            lines = error.decode(errors="replace").replace(path + ":", "line ").strip()
            raise KernelError("nft: " + ("\n".join(lines.splitlines()[:_ERROR_LINES])
                                         or "failed"))
        return output.decode(errors="replace")

    def close(self) -> None:
        self._free()  # closes the socket: the kernel drops an `owner` table


_per_thread = threading.local()


def run(script: str) -> str:
    """Run a script with this thread's context, made at its first use in
    the thread's network namespace: a context's socket acts in the namespace
    it was made in, so a thread that moved since (setns), or a child forked
    from it that joined another, gets a context of its own there."""
    netns = os.stat("/proc/thread-self/ns/net").st_ino
    nft = getattr(_per_thread, "nft", None)
    if nft is None or _per_thread.netns != netns:
        nft = _per_thread.nft = NftContext()
        _per_thread.netns = netns
    return nft.run(script)
