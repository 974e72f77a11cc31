"""A local Debian 12 base image with Python 3.11, for building the plugin image.

There is no image registry to pull python:3.11-slim-bookworm from, so the
base is made with debootstrap from the Debian mirror this machine's apt uses
and imported with `docker import`. The root file system is kept as a tarball
under /var/cache/calico-lab/, keyed by VERSION, so only the first run pays
for debootstrap (about 45 s); later runs only import the tarball.

    tag = ensure_base_image(host)   # "calico-test-base:bookworm" in DockerHost `host`

Like python:3.11-slim-bookworm it holds python3 with venv (ensurepip's
bundled pip) and no iptables: the plugin's Dockerfile must cope with both.
"""

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv")
# Change VERSION (or PACKAGES) to make every machine build the base afresh.
VERSION = f"1-{SUITE}-" + "+".join(PACKAGES)
TAG = f"calico-test-base:{SUITE}"
CACHE = Path(os.environ.get("CALICO_LAB_CACHE", "/var/cache/calico-lab"))
DEBOOTSTRAP = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
# Dropped from the root file system: the image needs none of it.
TRIM = ("var/cache/apt/archives", "var/cache/apt/*.bin", "var/lib/apt/lists",
        "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale")


class BaseImageUnavailable(RuntimeError):
    """The base cannot be made here (no debootstrap, no mirror); tests skip."""


def tarball_path():
    return CACHE / f"base-{VERSION}.tar"


def debian_mirror():
    """The Debian archive URI that this machine's apt uses for SUITE/main.

    CALICO_LAB_DEBIAN_MIRROR overrides it. Reads both the one-line format
    (sources.list) and deb822 (*.sources)."""
    if os.environ.get("CALICO_LAB_DEBIAN_MIRROR"):
        return os.environ["CALICO_LAB_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list")]
    files += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    files += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites, components in _entries(text, path.suffix == ".sources"):
            if SUITE in suites and "main" in components and "security" not in uri:
                return uri
    raise BaseImageUnavailable(
        f"no Debian mirror for {SUITE}/main in /etc/apt/sources.list*;"
        " set CALICO_LAB_DEBIAN_MIRROR")


def _entries(text, deb822):
    """(uri, suites, components) of each `deb` source in an apt sources file."""
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
            if "deb" in fields.get("types", []):
                for uri in fields.get("uris", []):
                    yield uri, fields.get("suites", []), fields.get("components", [])
    else:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]], words[3:]


def ensure_tarball(log=None):
    """The cached root file system tarball, made with debootstrap if missing.
    Concurrent callers wait for one another (a lock file in CACHE)."""
    path = tarball_path()
    if path.exists():
        return path
    if not os.path.exists(DEBOOTSTRAP):
        raise BaseImageUnavailable(
            "debootstrap is not installed (apt-get install debootstrap; scripts/deps.sh"
            " should install it): it makes the local Python base image, since there"
            " is no image registry")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():  # made by whoever held the lock before us
            return path
        _debootstrap(path, log or (CACHE / f"base-{VERSION}.log"))
    return path


def _debootstrap(path, log):
    root = Path(tempfile.mkdtemp(prefix="base-", dir=CACHE))
    try:
        argv = [DEBOOTSTRAP, "--variant=minbase", "--include=" + ",".join(PACKAGES),
                SUITE, str(root), debian_mirror()]
        with open(log, "w") as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=900)
        if result.returncode:
            raise BaseImageUnavailable(
                f"debootstrap failed ({result.returncode}); log {log}:\n"
                + "\n".join(Path(log).read_text(errors="replace").splitlines()[-15:]))
        for pattern in TRIM:
            for victim in root.glob(pattern):
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                    victim.mkdir()
                else:
                    victim.unlink()
        partial = path.with_suffix(".tar.part")
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
                       check=True, capture_output=True)
        partial.rename(path)
    finally:
        _remove_tree(root)


def _mounts_under(root):
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p.startswith(prefix)]


def _remove_tree(root):
    """Delete debootstrap's target, first unmounting what it may have left
    mounted there (/proc, /sys, binds of /dev when it thinks it runs in a
    container): never delete through a mount."""
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    left = _mounts_under(root)
    if left:
        raise BaseImageUnavailable(f"{root} still has mounts {left}; remove it by hand")
    shutil.rmtree(root, ignore_errors=True)


def ensure_base_image(host, tag=TAG):
    """Import the base into DockerHost `host` (unless it has it); return its tag."""
    if host.docker("image", "inspect", tag).returncode != 0:
        host.docker("import", ensure_tarball(), tag, check=True, timeout=300)
    return tag
