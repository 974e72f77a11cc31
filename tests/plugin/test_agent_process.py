"""The plugin's supervision of its node agent: restarted when it dies, after
a delay that grows while it keeps dying at once and is short again once it
had run a while."""

import logging
import os
import sys

from plugin import agent_process
from plugin.agent_process import AgentProcess
from tests.lab.common import wait_until


def restart_delays(tmp_path, monkeypatch, caplog, lives: float, healthy_run: float,
                   count: int) -> list[float]:
    """The delays the supervisor chose before each of `count` restarts of an
    agent that lives `lives` seconds (from its log line: the delays, not the
    machine's timing, are what is decided)."""
    monkeypatch.setattr(agent_process, "_RESTART_DELAYS", (0.05, 0.8))
    monkeypatch.setattr(agent_process, "HEALTHY_RUN", healthy_run)
    monkeypatch.setattr(agent_process, "_POLL", 0.01)
    caplog.set_level(logging.WARNING, logger=agent_process.__name__)
    log = tmp_path / "starts"
    script = (f"import time; open({str(log)!r}, 'a').write('started\\n'); "
              f"time.sleep({lives})")
    with AgentProcess([sys.executable, "-c", script]):
        assert wait_until(lambda: log.exists() and len(log.read_text().split()) > count,
                          60, 0.02)
    return [record.args[1] for record in caplog.records
            if record.name == agent_process.__name__][:count]


def test_an_agent_dying_at_once_is_restarted_ever_later(tmp_path, monkeypatch, caplog):
    # It dies long before HEALTHY_RUN however slow the machine is.
    assert restart_delays(tmp_path, monkeypatch, caplog, 0, 30.0, 6) == \
        [0.05, 0.1, 0.2, 0.4, 0.8, 0.8]


def test_an_agent_that_ran_a_while_is_restarted_promptly(tmp_path, monkeypatch, caplog):
    # It lives longer than HEALTHY_RUN, so each restart takes the first delay.
    assert restart_delays(tmp_path, monkeypatch, caplog, 0.35, 0.3, 4) == [0.05] * 4


def test_the_agent_ends_with_the_plugin(tmp_path, monkeypatch):
    monkeypatch.setattr(agent_process, "_POLL", 0.01)
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    with AgentProcess([sys.executable, "-c", script]):
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, 0.02)
    assert not os.path.exists(f"/proc/{pid_file.read_text()}")


def test_only_the_first_agent_is_told_the_node_is_registered(tmp_path, monkeypatch):
    """`run` registered the node just before: its first agent does not do it
    again; one restarted after a crash does (the Node may be gone)."""
    monkeypatch.setattr(agent_process, "_RESTART_DELAYS", (0.05, 0.8))
    monkeypatch.setattr(agent_process, "_POLL", 0.01)
    log = tmp_path / "argv"
    script = f"import sys; open({str(log)!r}, 'a').write(repr(sys.argv[1:]) + '\\n')"
    with AgentProcess([sys.executable, "-c", script], registered=True):
        assert wait_until(lambda: log.exists() and len(log.read_text().splitlines()) >= 3,
                          60, 0.02)
    assert log.read_text().splitlines()[:3] == [f"[{agent_process.REGISTERED_FLAG!r}]", "[]",
                                                "[]"]
