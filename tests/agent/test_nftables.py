"""agent/nftables.py against the kernel, in a network namespace of its own:
a script is one transaction, a refusal quotes the line nft refused, and
each run returns only its own output."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from pyroute2 import netns as pyroute2_netns

from agent import nftables
from kernel.errors import KernelError
from tests.lab import Lab

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
