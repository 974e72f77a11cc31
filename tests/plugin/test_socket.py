"""The real server, gunicorn on the plugin's unix sockets, against hostile
bodies: an 8 MiB body (sized or chunked) and a body nested 5,000 levels deep
get JSON Err answers (413, 400) over an intact connection, and the plugin's
log shows no traceback.  The same holds on every path and method, not only
the calls with a schema: Plugin.Activate, the GetCapabilities calls, unknown
paths, GET and HEAD read (or refuse) the whole body, and the connection
answers the next request.  The server is plugin.server alone, without `run`'s
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
from plugin.calls import CALLS

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


def send(conn, call, body, chunked=False, method="POST"):
    """(status, answer) of one request on conn (answer None for HEAD, which
    has no body); a reset or a broken pipe fails the test."""
    headers = {} if chunked else {"Content-Length": str(len(body))}
    if chunked:
        data = body
        body = (data[i:i + MAX_BODY] for i in range(0, len(data), MAX_BODY))
    conn.request(method, "/" + call, body=body, headers=headers, encode_chunked=chunked)
    resp = conn.getresponse()
    assert resp.getheader("Content-Type") == CONTENT_TYPE
    raw = resp.read()
    assert not resp.will_close, f"the server closes the connection after {resp.status}"
    return resp.status, None if method == "HEAD" else json.loads(raw)


def post(path, call, body, chunked=False):
    """(status, answer) of one POST on a connection of its own."""
    conn = UnixConnection(path, timeout=30)
    try:
        return send(conn, call, body, chunked)
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


ACTIVATED = (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
TOO_LARGE = (f"Request Entity Too Large: the request body is larger than {MAX_BODY} bytes; "
             "Docker never sends one that large")
# Bodies the server must read to their end: beyond gunicorn's 64 KiB drain
# of a keep-alive connection, within the limit (answered as the path and
# method say), and 8 MiB (refused, on every path).
SMALL = json.dumps({"Padding": "x" * (256 * 1024)}).encode()
HUGE = b"x" * (8 * MAX_BODY)
PATHS = ["Plugin.Activate", "NetworkDriver.GetCapabilities", "IpamDriver.GetCapabilities",
         "NetworkDriver.CreateNetwork", "NetworkDriver.Frobnicate", "no/such/path"]


def unknown_call(path):
    return {"Err": f"Not Found: unknown plugin call /{path}; this plugin implements "
                   + ", ".join(sorted(CALLS))}


NO_METHOD = "Method Not Allowed: The method is not allowed for the requested URL."


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
@pytest.mark.parametrize("method", ["POST", "GET", "HEAD", "PUT"])
@pytest.mark.parametrize("call", PATHS)
def test_every_path_refuses_an_oversize_body_and_keeps_the_connection(
        plugin, call, method, chunked):
    path, log = plugin
    conn = UnixConnection(path, timeout=60)
    try:
        status, answer = send(conn, call, HUGE, chunked, method)
        assert status == 413
        assert answer in (None, {"Err": TOO_LARGE})  # HEAD: the status alone
        sock = conn.sock
        assert send(conn, "Plugin.Activate", b"") == ACTIVATED
        assert conn.sock is sock  # the same connection answered
    finally:
        conn.close()
    text = log.read_text()
    assert f"{call}  error 413: {TOO_LARGE}" in text
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize("method, call, expected", [
    ("POST", "Plugin.Activate", ACTIVATED),
    ("POST", "NetworkDriver.GetCapabilities",
     (200, {"Scope": "local", "ConnectivityScope": "global", "GwAllocChecker": True})),
    ("POST", "IpamDriver.GetCapabilities",
     (200, {"RequiresMACAddress": False, "RequiresRequestReplay": False})),
    ("POST", "NetworkDriver.CreateNetwork",
     (400, {"Err": "NetworkDriver.CreateNetwork: bad request: NetworkID is required"})),
    ("POST", "NetworkDriver.Frobnicate", (404, unknown_call("NetworkDriver.Frobnicate"))),
    ("POST", "no/such/path", (404, unknown_call("no/such/path"))),
    ("GET", "Plugin.Activate", (405, {"Err": NO_METHOD})),
    ("PUT", "IpamDriver.GetCapabilities", (405, {"Err": NO_METHOD})),
    ("HEAD", "NetworkDriver.GetCapabilities", (405, None)),
    ("OPTIONS", "Plugin.Activate", (405, {"Err": NO_METHOD})),
])
def test_every_path_reads_a_body_within_the_limit_and_keeps_the_connection(
        plugin, method, call, expected):
    path, _ = plugin
    conn = UnixConnection(path, timeout=60)
    try:
        for chunked in (False, True):
            assert send(conn, call, SMALL, chunked, method) == expected
        sock = conn.sock
        assert send(conn, "Plugin.Activate", b"") == ACTIVATED
        assert conn.sock is sock
    finally:
        conn.close()


def test_an_idle_connection_stays_open_for_the_next_call(plugin):
    """dockerd keeps its connections to the plugin and, when one it sends on
    was closed under it, sends the call again with an empty body: the
    server must not close them when idle (gunicorn's own 2 s did)."""
    path, _ = plugin
    conn = UnixConnection(path, timeout=30)
    try:
        assert send(conn, "Plugin.Activate", b"") == ACTIVATED
        sock = conn.sock
        time.sleep(4)  # twice gunicorn's default keep-alive, which its loop checks each second
        assert send(conn, "IpamDriver.GetCapabilities", b"") == (
            200, {"RequiresMACAddress": False, "RequiresRequestReplay": False})
        assert conn.sock is sock
    finally:
        conn.close()


def test_the_arbiter_freezes_what_it_holds_before_it_forks_the_worker(tmp_path):
    """gunicorn's pre_fork hook moves the arbiter's objects out of the
    collector's reach, so the worker's collections do not copy the pages it
    shares with the arbiter (its PSS at 100 containers: 99 -> 83 MB)."""
    import gc

    from plugin import server
    from plugin.config import Config

    app = server.PluginServer(Config.from_env(), [str(tmp_path / "calico.sock")])
    gc.unfreeze()
    try:
        app.cfg.pre_fork(app, None)  # as gunicorn's arbiter calls it
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
