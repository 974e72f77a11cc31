"""The one netlink idiom: each thread keeps its own socket between calls
(the driver's Join and the agent's route work alike), a failure that
escapes closes it so the next call starts afresh, and the failure is a
KernelError naming what could not be done.  Queries only, in pytest's own
namespace: nothing is changed."""

import threading

import pytest

from agent.routing import kernel as routing_kernel
from kernel import netlink
from kernel.errors import KernelError


def this_threads():
    with netlink.rtnl() as nl:
        return nl


def test_a_thread_keeps_its_socket_and_another_thread_has_its_own():
    first = this_threads()
    routing_kernel.read_routes()  # the agent's calls use it too
    assert routing_kernel.link_exists("lo")
    assert this_threads() is first
    other = []
    thread = threading.Thread(target=lambda: other.append(this_threads()))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_a_failure_is_a_kernel_error_and_the_next_call_starts_afresh():
    before = this_threads()
    with pytest.raises(KernelError) as refused:
        with netlink.iproute("look up calinowhere") as ipr:
            ipr.link("get", ifname="calinowhere")
    assert str(refused.value) == "could not look up calinowhere: No such device (errno 19)"
    assert this_threads() is not before
