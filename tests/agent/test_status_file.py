"""agent.status_file: a status replaced whole; a paced one written at most
once per interval, the newest last, nothing after cancel."""

import json
import threading
import time

from agent.status_file import PacedStatus
from tests.lab.common import wait_until


def read(path):
    with open(path) as f:
        return json.load(f)


def test_a_paced_status_is_written_at_once_then_at_most_once_per_interval(tmp_path):
    path = tmp_path / "run" / "paced-once.json"  # its directory is made
    status = PacedStatus(str(path), interval=0.3)
    status.write({"n": 1})
    assert read(path) == {"n": 1}  # the first at once
    written = path.stat().st_mtime_ns
    for n in range(2, 6):
        status.write({"n": n})
    assert read(path) == {"n": 1} and path.stat().st_mtime_ns == written
    assert wait_until(lambda: read(path) == {"n": 5}, 2)  # the newest, within the interval
    assert list(path.parent.iterdir()) == [path]  # no temporary file left
    for n in range(6, 30):  # one writer thread, however many writes wait for it
        status.write({"n": n})
        time.sleep(0.02)
    assert wait_until(lambda: read(path) == {"n": 29}, 2)
    assert [t.name for t in threading.enumerate()].count("status paced-once.json") == 1
    status.cancel()
    assert wait_until(lambda: "status paced-once.json" not in
                      [t.name for t in threading.enumerate()], 2)  # and it ends


def test_a_cancelled_paced_status_writes_nothing_more(tmp_path):
    path = tmp_path / "policy.json"
    status = PacedStatus(str(path), interval=0.2)
    status.write({"n": 1})
    status.write({"n": 2})
    status.cancel()
    path.unlink()  # as the engine's stop removes it
    status.write({"n": 3})  # a sync that ended after the stop
    time.sleep(0.4)
    assert not path.exists()


def test_a_status_that_cannot_be_written_leaves_the_writer_for_the_next(tmp_path):
    path = tmp_path / "paced-bad.json"
    status = PacedStatus(str(path), interval=0.2)
    status.write({"n": 1})
    status.write({"n": object()})  # not JSON: logged by the writer thread
    time.sleep(0.3)
    status.write({"n": 3})  # within the interval of the failed write: the writer's
    assert wait_until(lambda: read(path) == {"n": 3}, 2)
    status.cancel()
    assert list(tmp_path.iterdir()) == [path]  # no half-written temporary file left
