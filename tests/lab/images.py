"""A busybox image made locally: there is no image registry to pull from."""

import io
import subprocess
import tarfile

from .common import run_dir

BUSYBOX = "/bin/busybox"  # Debian's busybox-static: no shared libraries needed
_tar = None


def _add(tar, name, kind=tarfile.DIRTYPE, mode=0o755, data=b"", target=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), target
    tar.addfile(info, io.BytesIO(data) if data else None)


def busybox_tar():
    """A tar of a root file system holding busybox, built once per session."""
    global _tar
    if _tar is None:
        path = run_dir() / "busybox.tar"
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                                 check=True).stdout.split()
        with open(BUSYBOX, "rb") as f:
            binary = f.read()
        with tarfile.open(path, "w") as tar:
            for d in ("bin", "etc", "dev", "proc", "sys", "root"):
                _add(tar, d)
            _add(tar, "tmp", mode=0o1777)
            _add(tar, "bin/busybox", tarfile.REGTYPE, data=binary)
            for applet in applets:
                if applet != "busybox":
                    _add(tar, f"bin/{applet}", tarfile.SYMTYPE, 0o777, target="busybox")
            _add(tar, "etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
            _add(tar, "etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
        _tar = path
    return _tar


def import_busybox(host, tag="busybox:latest"):
    """Import the busybox image into DockerHost `host` unless it has it.
    Its default command is sh, so `docker run -tid busybox` works. Its stop
    signal is SIGKILL: busybox as PID 1 ignores SIGTERM, and every `docker
    stop` (and dockerd stop) would otherwise wait 10 s per container."""
    if host.docker("image", "inspect", tag).returncode != 0:
        host.docker("import", busybox_tar(), tag, check=True)
        # `docker import --change` cannot set STOPSIGNAL; a build from the
        # local image can, and needs no registry.
        host.docker("build", "-q", "-t", tag, "-", check=True,
                    input=f'FROM {tag}\nSTOPSIGNAL SIGKILL\nCMD ["sh"]\n')
