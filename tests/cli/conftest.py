"""Fixtures for the operating commands: `plugin.cli.main.main` run in-process
against the session's real etcd, with the environment a user would set."""

import io
import json
from typing import NamedTuple

import pytest

from plugin.cli.main import main

NODE = "test-node"


class Result(NamedTuple):
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(etcd_clean, monkeypatch, capsys, tmp_path):
    """cli(*argv, stdin=None) -> Result(exit code, stdout, stderr)."""
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_clean.endpoints)
    monkeypatch.setenv("NODENAME", NODE)
    monkeypatch.setenv("ETCD_TIMEOUT", "1")  # an etcd outage shows quickly
    # No node agent's policy status file unless a test writes one.
    monkeypatch.setenv("CALICO_LIBNETWORK_RUN_DIR", str(tmp_path / "run"))

    def run(*argv, stdin=None):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return run


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err and result.err.startswith("calico-libnetwork: ")
