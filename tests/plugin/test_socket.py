"""The real server, gunicorn on the plugin's unix sockets, against hostile
bodies: an 8 MiB body (sized or chunked) and a body nested 5,000 levels deep
get JSON Err answers (413, 400) over an intact connection, and the plugin's
log shows no traceback.  The server is plugin.server alone, without `run`'s
start-up, which would change this host's FORWARD chain."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.app import CONTENT_TYPE, MAX_BODY
from plugin.cli.probe import _UnixConnection as UnixConnection  # what `status` probes with

REPO = str(Path(__file__).resolve().parents[2])
SERVE = """
import logging, sys
from plugin import server
from plugin.config import Config
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
paths = server.socket_paths(sys.argv[1])
server.claim_sockets(paths)
server.serve(Config.from_env(), paths)
"""


@pytest.fixture(scope="module")
def plugin(etcd, tmp_path_factory):
    """(socket path, log path) of a running server on the session's etcd."""
    run_dir = tmp_path_factory.mktemp("plugin")
    log = run_dir / "plugin.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETCD", "CALICO", "NODENAME", "NO_DEFAULT", "IP"))}
    env.update(PYTHONPATH=REPO, ETCD_ENDPOINTS=etcd.endpoints, NODENAME="socket-test",
               IP="10.98.0.1/24", DOCKER_HOST="unix:///nonexistent/docker.sock")
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", SERVE, str(run_dir)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    path = run_dir / "calico.sock"
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the plugin's socket did not appear"
            time.sleep(0.1)
        yield str(path), log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def post(path, call, body, chunked=False):
    """(status, answer) of one POST; a reset or a broken pipe fails the test."""
    conn = UnixConnection(path, timeout=30)
    try:
        headers = {} if chunked else {"Content-Length": str(len(body))}
        if chunked:
            data = body
            body = (data[i:i + MAX_BODY] for i in range(0, len(data), MAX_BODY))
        conn.request("POST", "/" + call, body=body, headers=headers, encode_chunked=chunked)
        resp = conn.getresponse()
        assert resp.getheader("Content-Type") == CONTENT_TYPE
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("body, chunked, status, message", [
    (b"x" * (8 * MAX_BODY), False, 413, "larger than"),
    (b'{"NetworkID": "' + b"a" * (8 * MAX_BODY) + b'"}', True, 413, "larger than"),
    (b"[" * 5000 + b"]" * 5000, False, 400, "nested too deeply"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, True, 400, "nested too deeply"),
])
def test_hostile_bodies_get_a_json_err_over_the_socket(plugin, body, chunked, status, message):
    path, log = plugin
    answer_status, answer = post(path, "NetworkDriver.CreateNetwork", body, chunked)
    assert answer_status == status and message in answer["Err"], answer
    # The server is fine afterwards.
    assert post(path, "Plugin.Activate", b"") == (
        200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    text = log.read_text()
    assert f"NetworkDriver.CreateNetwork  error {status}: " in text  # one line per request
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
