"""Skipped tests are listed at the end of every run, with their reasons.

CI runs as root with everything installed (scripts/deps.sh), so a test that
skips there did not run for a reason nobody chose: with CI=true each skip
must match an entry of ALLOWED (a test id prefix and why it cannot run on
CI's machine), or the run fails.
"""

import os

import pytest

# test id prefix -> why it may skip in CI; printed with every run.
ALLOWED = {}

_skipped = []


def _reason(report):
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, line, "Skipped: why")
        return longrepr[2].removeprefix("Skipped: ")
    return str(longrepr)


def _allowed(nodeid):
    return next((why for prefix, why in ALLOWED.items() if nodeid.startswith(prefix)), None)


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append((report.nodeid, _reason(report)))


def _unexplained():
    return [(nodeid, why) for nodeid, why in _skipped if _allowed(nodeid) is None]


def pytest_sessionfinish(session):
    if os.environ.get("CI") == "true" and _unexplained():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    write = terminalreporter.write_line
    terminalreporter.section("skips")
    write(f"allowed to skip in CI ({len(ALLOWED)}):"
          + "".join(f"\n  {prefix}: {why}" for prefix, why in ALLOWED.items()))
    unexplained = _unexplained()
    write(f"skipped: {len(_skipped)}, of which not on the allow-list: {len(unexplained)}")
    for nodeid, why in _skipped:
        mark = "allowed" if _allowed(nodeid) is not None else "NOT ALLOWED"
        write(f"  {mark}: {nodeid}: {why}")
    if unexplained and os.environ.get("CI") == "true":
        write("CI=true: a skip not on tests/skip_policy.py ALLOWED fails the run", red=True)
