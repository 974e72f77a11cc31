"""The plugin's supervision of its node agent: restarted when it dies, after
a delay that grows while it keeps dying at once and is short again once it
had run a while."""

import os
import sys

from plugin import agent_process
from plugin.agent_process import AgentProcess
from tests.lab.common import wait_until


def starts(tmp_path, monkeypatch, lives: float, count: int) -> list[float]:
    """When an agent that lives `lives` seconds was started, `count` times."""
    monkeypatch.setattr(agent_process, "_RESTART_DELAYS", (0.05, 0.8))
    monkeypatch.setattr(agent_process, "HEALTHY_RUN", 0.3)
    monkeypatch.setattr(agent_process, "_POLL", 0.01)
    log = tmp_path / "starts"
    script = (f"import time; open({str(log)!r}, 'a').write(f'{{time.monotonic()}}\\n'); "
              f"time.sleep({lives})")
    with AgentProcess([sys.executable, "-c", script]):
        assert wait_until(lambda: log.exists() and len(log.read_text().split()) >= count,
                          30, 0.02)
    return [float(t) for t in log.read_text().split()][:count]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:])]


def test_an_agent_dying_at_once_is_restarted_ever_later(tmp_path, monkeypatch):
    between = gaps(starts(tmp_path, monkeypatch, 0, 6))
    assert between[-1] > 0.6 and between[-1] > 4 * between[0], between


def test_an_agent_that_ran_a_while_is_restarted_promptly(tmp_path, monkeypatch):
    between = gaps(starts(tmp_path, monkeypatch, 0.35, 6))
    # Each: its life, the first delay, the interpreter's start; never the ceiling.
    assert all(gap < 0.35 + 0.05 + 0.35 for gap in between), between


def test_the_agent_ends_with_the_plugin(tmp_path, monkeypatch):
    monkeypatch.setattr(agent_process, "_POLL", 0.01)
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    with AgentProcess([sys.executable, "-c", script]):
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, 0.02)
    assert not os.path.exists(f"/proc/{pid_file.read_text()}")
