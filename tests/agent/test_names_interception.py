"""The interception table in a network namespace of its own: kept while the
agent runs (written again after `nft flush ruleset`), written as soon as a
previous owner's table is gone (EPERM until then), removed at stop."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import netns as pyroute2_netns

from agent.names.intercept import TABLE, Interception
from kernel.errors import KernelError
from tests.introspect import interception_present
from tests.lab import Lab
from tests.lab.common import wait_until

pytestmark = pytest.mark.require_root

REDIRECTS = {"10.0.0.53": 40001}
HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from agent.names.intercept import Interception
held = Interception()  # its libnftables context owns the table while it lives
held.program({{"10.0.0.53": 40000}})
print("held", flush=True)
time.sleep({seconds})
"""


@pytest.fixture
def ns():
    with Lab() as lab:
        yield lab.netns("names-nft")


def tables(ns):
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                          capture_output=True, text=True, check=True).stdout


def test_the_table_is_written_again_when_flushed_and_removed_at_stop(ns):
    changes = []
    interception = Interception(check_interval=0.1, retry_interval=0.1)
    # The netlink socket is made in the namespace of the thread that makes it.
    with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as inside:
        inside.submit(interception.program, REDIRECTS).result()
    interception.keep(changes.append)
    try:
        assert TABLE in tables(ns) and interception_present(interception)
        subprocess.run(["ip", "netns", "exec", ns, "nft", "flush", "ruleset"], check=True)
        assert wait_until(lambda: TABLE in tables(ns), 2, 0.05)
        assert "dnat ip to 169.254.1.1:40001" in subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", TABLE],
            capture_output=True, text=True).stdout
    finally:
        interception.remove()
    assert TABLE not in tables(ns)


def test_written_once_the_previous_owners_table_is_gone(ns):
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    holder = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                               HOLD.format(repo=repo, seconds=1.0)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    changes = []
    interception = Interception(check_interval=0.1, retry_interval=0.1)
    try:
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as inside:
            with pytest.raises(KernelError):  # owned by the other process
                inside.submit(interception.program, REDIRECTS).result()
        started = time.monotonic()
        interception.keep(changes.append)
        assert wait_until(lambda: changes == [True], 5, 0.05)
        assert time.monotonic() - started < 2.0  # the holder's second, then one retry
        assert "40001" in subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "table", "inet", TABLE],
            capture_output=True, text=True).stdout
    finally:
        interception.remove()
        holder.wait(5)
