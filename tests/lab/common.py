"""Naming, processes and last-resort cleanup shared by the lab helpers.

Everything the lab makes carries the run id RUN: network namespaces are
named ``calab-<RUN>-<name>`` (dockerd's cgroup parent uses the same name) and
files live under /tmp/calico-lab/<RUN>/ and /dev/shm/calico-lab/<RUN>/.
The first helper that needs a directory claims the run (writes the owner's
pid) and sweeps runs whose owner is dead; at exit the owner sweeps its own
run, so even a test that crashed mid-way leaves nothing behind.
"""

import atexit
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

PREFIX = "calab"
RUN = secrets.token_hex(3)
_RUN_ID = "[0-9a-f]{6}"
LAB_ROOT = Path("/tmp/calico-lab")
SHM_ROOT = Path("/dev/shm/calico-lab")  # tmpfs: etcd's fsync costs nothing
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")


class LabError(RuntimeError):
    """A lab component failed to start or stop; the message carries its log."""


def lab_name(name):
    """The run-unique name of a lab namespace (and cgroup) called `name`."""
    return f"{PREFIX}-{RUN}-{name}"


def netns_path(netns):
    return str(NETNS_DIR / netns)


def in_netns(argv, netns):
    """`argv` prefixed to run in network namespace `netns` (None: as is).

    nsenter, unlike `ip netns exec`, leaves the mount namespace and /sys
    alone, and execs the command, so the child's pid is the command's pid.
    """
    return (["nsenter", f"--net={netns_path(netns)}"] if netns else []) + list(argv)


def ip(*args, netns=None, check=True):
    """Run iproute2 `ip [-n netns] args...`; raise LabError on failure if `check`."""
    argv = ["ip"] + (["-n", netns] if netns else []) + [str(a) for a in args]
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode:
        raise LabError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def wait_until(predicate, timeout, interval=0.1):
    """Poll `predicate` until it returns true; return False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port(host="127.0.0.1"):
    """A TCP port free on `host` right now (in the current network namespace)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def in_parallel(fn, count):
    """Call fn(0), ..., fn(count - 1) each in a thread of its own; return
    when every one has ended."""
    threads = [threading.Thread(target=fn, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_all(*steps):
    """Call every step even if some fail, then raise the first failure."""
    errors = []
    for step in steps:
        try:
            step()
        except Exception as e:  # cleanup must go on; the error is re-raised below
            errors.append(e)
    if errors:
        raise errors[0]


class LabProcess:
    """A long-running child process (optionally inside a network namespace)
    whose stdout and stderr go to `log_path`, run in `cwd` if given."""

    def __init__(self, argv, log_path, env=None, netns=None, cwd=None):
        self.argv = in_netns(argv, netns)
        self.log_path = Path(log_path)
        self.env = env
        self.cwd = cwd
        self.popen = None

    def start(self):
        with open(self.log_path, "ab") as log:
            # Own session: kill() can take down the whole process group.
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    @property
    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL if it is still alive after `timeout` s."""
        if not self.running:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        """SIGKILL the process and its process group, and reap it."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()

    def log_tail(self, lines=40):
        return tail(self.log_path, lines)


# --- finding and killing what a run left ---------------------------------

def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def pids_in_netns(netns):
    """Pids of processes whose network namespace is lab namespace `netns`."""
    try:
        target = os.stat(netns_path(netns))
    except FileNotFoundError:
        return []
    found = []
    for pid in _pids():
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            found.append(pid)
    return found


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def pids_with_cmdline(text):
    """Pids of processes whose command line contains `text`."""
    return [pid for pid in _pids() if text in _cmdline(pid)]


def _gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # a zombie holds no namespace, mount or cgroup


def kill_pids(pids):
    """SIGKILL `pids` and wait (up to 5 s) until they are gone."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: all(_gone(p) for p in pids), 5, 0.05)


def delete_netns(netns):
    """Kill what runs in lab namespace `netns`, then delete it (links go with it)."""
    kill_pids(pids_in_netns(netns))
    if os.path.exists(netns_path(netns)):
        ip("netns", "del", netns)


def remove_cgroups(name):
    """Kill the processes in cgroup `name` (dockerd's --cgroup-parent, which
    dockerd never removes) in every hierarchy, and remove the directories."""
    for top in _cgroup_dirs(name):
        for path, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                kill_pids([int(p) for p in Path(path, "cgroup.procs").read_text().split()])
            except OSError:
                pass
            # rmdir fails with EBUSY until the killed tasks have really left.
            wait_until(lambda: _rmdir(path), 5, 0.05)


def _cgroup_dirs(pattern):
    # cgroup v2 has one tree at the root; v1 (as here) one per controller.
    return glob.glob(f"{CGROUP_ROOT}/{pattern}") + glob.glob(f"{CGROUP_ROOT}/*/{pattern}")


def _rmdir(path):
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _start_time(pid):
    """The kernel's start time of `pid` (tells a live owner from a reused pid)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def _owner_alive(run):
    try:
        pid, start = (LAB_ROOT / run / "owner").read_text().split()
    except FileNotFoundError:
        # A run that is being claimed right now has its directory but not yet
        # its owner file: give it a minute.
        try:
            return time.time() - (LAB_ROOT / run).stat().st_mtime < 60
        except FileNotFoundError:
            return False
    except (OSError, ValueError):
        return False
    try:
        return _start_time(int(pid)) == start
    except (OSError, ValueError, IndexError):
        return False


def sweep_run(run):
    """Remove everything run `run` made: processes, namespaces, cgroups, files."""
    netns_names = [p.name for p in NETNS_DIR.glob(f"{PREFIX}-{run}-*")]
    for netns in netns_names:
        kill_pids(pids_in_netns(netns))
    # Daemons in the root namespace (etcd) name their directories.
    kill_pids(pids_with_cmdline(f"/calico-lab/{run}/"))
    for cgroup in {Path(p).name for p in _cgroup_dirs(f"{PREFIX}-{run}-*")}:
        remove_cgroups(cgroup)
    for netns in netns_names:
        delete_netns(netns)
    for root in (LAB_ROOT, SHM_ROOT):
        shutil.rmtree(root / run, ignore_errors=True)


def sweep_leftovers():
    """Sweep every earlier run whose owner process is dead."""
    runs = {p.name for root in (LAB_ROOT, SHM_ROOT) if root.is_dir()
            for p in root.iterdir() if re.fullmatch(_RUN_ID, p.name)}
    names = [p.name for p in NETNS_DIR.glob(f"{PREFIX}-*")]
    names += [Path(p).name for p in _cgroup_dirs(f"{PREFIX}-*")]
    runs |= {m.group(1) for m in (re.match(rf"{PREFIX}-({_RUN_ID})-", n) for n in names) if m}
    for run in runs - {RUN}:
        if not _owner_alive(run):
            sweep_run(run)


_claimed = False


def run_dir():
    """This run's directory under /tmp/calico-lab, claimed on first use."""
    global _claimed
    path = LAB_ROOT / RUN
    if not _claimed:
        sweep_leftovers()
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "owner.tmp"
        tmp.write_text(f"{os.getpid()} {_start_time(os.getpid())}")
        tmp.rename(path / "owner")
        atexit.register(_sweep_own_run, os.getpid())
        _claimed = True
    return path


def shm_dir():
    """This run's directory under /dev/shm/calico-lab."""
    run_dir()
    path = SHM_ROOT / RUN
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sweep_own_run(owner_pid):
    if os.getpid() != owner_pid:  # a forked child exiting must not sweep
        return
    sweep_run(RUN)
    for root in (LAB_ROOT, SHM_ROOT):
        _rmdir(root)  # only if no other run is using it
