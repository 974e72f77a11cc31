"""agent/nftables.py against the kernel, in a network namespace of its own:
a script is one transaction, a refusal quotes the line nft refused, and
each run returns only its own output."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import netns as pyroute2_netns

from agent import nftables
from kernel.errors import KernelError
from tests.lab import Lab
from tests.lab.netns import run_in

pytestmark = pytest.mark.require_root

T = "inet calico-nft-test"


@pytest.fixture
def inside():
    """A thread in a throw-away namespace: its context acts there."""
    with Lab() as lab:
        ns = lab.netns("nftables")
        with ThreadPoolExecutor(1, initializer=pyroute2_netns.setns, initargs=(ns,)) as thread:
            yield lambda script: thread.submit(nftables.run, script).result()


def test_a_refused_script_changes_nothing_and_names_its_line(inside):
    inside(f"add table {T}\nadd chain {T} c\n")
    with pytest.raises(KernelError) as refused:
        inside(f"add chain {T} d\nadd rule {T} c counter\nadd rule {T} c jump nowhere\n")
    message = str(refused.value)
    assert message.startswith("nft: line 3:")
    assert f"add rule {T} c jump nowhere" in message.splitlines()
    assert inside(f"list table {T}") == f"table {T} {{\n\tchain c {{\n\t}}\n}}\n"


def test_each_run_returns_its_own_output(inside):
    inside(f"add table {T}\n")
    listing = inside(f"list table {T}")
    assert inside(f"list table {T}") == listing
    assert inside(f"add chain {T} c\n") == ""


def test_a_context_acts_in_the_namespace_its_thread_is_in_now():
    """A thread's context made in one namespace is not used after the
    thread (or a child forked from it) joined another: the table lands in
    the namespace the caller is in.  (A fork of pytest's main thread, which
    `check` had given a context, once wrote the anti-spoofing table into
    pytest's own namespace.)"""
    nftables.run("list tables\n")  # this thread's context, in pytest's namespace
    with Lab() as lab:
        ns = lab.netns("nftables-moved")
        try:
            run_in(ns, nftables.run, f"add table {T}\n")
            assert f"table {T}" in run_in(ns, nftables.run, "list tables\n")
        finally:
            here = nftables.run("list tables\n")
            if f"table {T}" in here:
                nftables.run(f"delete table {T}\n")
        assert f"table {T}" not in here
