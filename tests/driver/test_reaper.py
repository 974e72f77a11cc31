"""The link reaper and a Join of the same endpoint right after its Leave
(dockerd does so when a legacy link is removed): the pair Join sets up must
survive the deletion Leave queued.  Real veths, in a namespace of the test's
own."""

import os
import threading

import pytest

from driver import dataplane
from driver.reaper import LinkReaper
from tests.lab import Lab
from tests.lab.netns import run_in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces")


@pytest.fixture
def host():
    with Lab() as lab:
        yield lab.netns("reaper")


def _drained(reaper):
    """Wait until the reaper has handled everything queued before now: a
    sentinel queued last is gone."""
    dataplane.set_up_veth("caliSENTINEL", "tempSENTINEL")
    reaper.delete("caliSENTINEL")
    pause = threading.Event()
    for _ in range(3000):
        if not dataplane.link_exists("caliSENTINEL"):
            return
        pause.wait(0.01)
    raise AssertionError("the reaper never deleted its sentinel")


def leave_then_join():
    reaper = LinkReaper()
    dataplane.set_up_veth("caliA", "tempA", ["10.65.0.2"])  # Join
    reaper.delete("caliA")  # Leave
    reaper.delete("caliA")  # DeleteEndpoint would ask again; not this time
    reaper.keep("caliA")  # Join again
    dataplane.set_up_veth("caliA", "tempA", ["10.65.0.2"])
    _drained(reaper)
    return dataplane.link_exists("caliA")


def keep_during_the_deletion():
    """keep() while the deletion is under way returns once it is done."""
    reaper = LinkReaper()
    started, release = threading.Event(), threading.Event()
    real = dataplane.remove_veth

    def held_remove(ifname):
        started.set()
        release.wait()
        real(ifname)
    dataplane.remove_veth = held_remove  # only in this forked child
    dataplane.set_up_veth("caliB", "tempB")
    reaper.delete("caliB")
    assert started.wait(30)
    releaser = threading.Timer(0.05, release.set)
    releaser.start()
    reaper.keep("caliB")
    gone_when_kept = not dataplane.link_exists("caliB")
    dataplane.set_up_veth("caliB", "tempB")  # Join makes the pair anew
    dataplane.remove_veth = real
    _drained(reaper)
    return gone_when_kept, dataplane.link_exists("caliB")


def test_a_join_after_leave_keeps_its_veth(host):
    assert run_in(host, leave_then_join) is True


def test_keep_waits_for_a_deletion_under_way(host):
    assert run_in(host, keep_during_the_deletion) == (True, True)
