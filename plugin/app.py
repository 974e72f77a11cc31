"""The HTTP face of the plugin: Flask app factory and error answers (the
call table, which method answers each call, is plugin/calls.py).

Every call is `POST /<Subsystem>.<Method>` with a JSON body (Docker sends no
Content-Type).  Every request's body is read whole first, whatever its path
and method, or refused with 413 when over MAX_BODY.  A handler validates the
body against its schema, calls one domain method and returns its dict.  Any
failure becomes HTTP 500 (400 for a malformed request) with {"Err": "..."}:
Docker shows that text to the user, and for IPAM only a non-200 status counts
as an error.
"""

import json
import logging
import math
import threading
import time

import flask
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from datastore.errors import DatastoreError
from driver.errors import DriverError
from ipam.errors import IpamError
from kernel.errors import KernelError
from metrics import instruments
from plugin.calls import CALLS
from plugin.schemas import BadRequest

LOG = logging.getLogger("calico_libnetwork.requests")
MAX_BODY = 1024 * 1024
# An oversize body is read to its end (up to this much) before the 413
# answer, so the client gets the answer instead of a reset connection.
DRAIN_LIMIT = 64 * 1024 * 1024
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_ERR = 4096  # characters of an Err
USER_ERRORS = (DriverError, IpamError, DatastoreError, KernelError)

# The ids worth putting in the one log line per request.
_LOGGED_FIELDS = ("NetworkID", "EndpointID", "PoolID", "Pool", "Address", "V6")


class Services:
    """Builds the domain objects on first use, i.e. after gunicorn forks:
    gRPC channels (inside the etcd client) do not survive fork."""

    def __init__(self, factory):
        self._factory = factory
        self._lock = threading.Lock()
        self._built = None

    def get(self, service: type):
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._factory()
        return self._built[service]


def create_app(services_factory, implements=("NetworkDriver", "IpamDriver")):
    """services_factory() -> {NetworkDriver: a NetworkDriver, IpamDriver: an IpamDriver}."""
    app = flask.Flask("calico_libnetwork", static_folder=None)  # no /static/ files
    services = Services(services_factory)
    app.extensions["calico_services"] = services

    @app.before_request
    def read_body():
        """Every request's body is read to its end before it is answered,
        whatever its path or method (routing errors are raised after this):
        gunicorn closes a keep-alive connection that has more than 64 KiB
        left unread, and a client still writing its body gets a broken pipe
        instead of the answer."""
        flask.g.started = time.monotonic()
        flask.g.body = _read_body()

    # No automatic OPTIONS answer: every method but POST is a JSON 405.
    @app.route("/Plugin.Activate", methods=["POST"], provide_automatic_options=False)
    def activate():
        return _answer({"Implements": list(implements)})

    @app.route("/<path:call>", methods=["POST"], provide_automatic_options=False)
    def dispatch(call):
        answer = CALLS.get(call)
        if answer is None:
            raise NotFound(f"unknown plugin call /{call}; this plugin implements "
                           + ", ".join(sorted(CALLS)))
        fields = {}
        try:
            fields = answer.schema(parse_body(flask.g.body))
            result = answer.call(services.get(answer.service), fields)
            status, body = 200, result if result is not None else {}
        except BadRequest as exc:
            status, body = 400, _err(f"{call}: bad request: {exc}")
        except USER_ERRORS as exc:
            status, body = 500, _err(str(exc))
        except Exception as exc:  # noqa: BLE001 - never a traceback to Docker
            LOG.exception("%s failed unexpectedly", call)
            status, body = 500, _err(f"{call}: internal error ({type(exc).__name__}: "
                                     f"{exc}); see the calico-libnetwork log")
        _log(call, fields, status, body)
        return _answer(body, status)

    @app.errorhandler(HTTPException)
    def http_error(exc):  # 413, 404 (no such call), 405 (a method but POST)
        body = _err(f"{exc.name}: {exc.description}")
        _log(flask.request.path.lstrip("/"), {}, exc.code, body)
        return _answer(body, exc.code)

    return app


def parse_body(raw: bytes):
    """The request body as JSON (None when empty), or BadRequest.

    Strict JSON, as Docker (Go) sends it: NaN, Infinity and numbers beyond a
    float's range are refused here rather than written into etcd records
    that Go readers cannot parse.
    """
    if not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("malformed JSON (nested too deeply)") from None


def _not_json(name):
    raise ValueError(f"{name} is not JSON")


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _read_body() -> bytes:
    stream = flask.request.stream
    raw = stream.read(MAX_BODY + 1)
    if len(raw) <= MAX_BODY:
        return raw
    drained = len(raw)
    while drained < DRAIN_LIMIT:
        chunk = stream.read(1024 * 1024)
        if not chunk:
            break
        drained += len(chunk)
    raise RequestEntityTooLarge(f"the request body is larger than {MAX_BODY} bytes; "
                                "Docker never sends one that large")


def _log(call, fields, status, body):
    instruments.call_answered(call, flask.g.started, status != 200)
    ms = (time.monotonic() - flask.g.started) * 1000
    ids = " ".join(f"{k}={str(fields[k])[:12]}" for k in _LOGGED_FIELDS
                   if fields.get(k) not in (None, ""))
    outcome = "ok" if status == 200 else f"error {status}: {body.get('Err')}"
    level = logging.INFO if status == 200 else logging.WARNING
    LOG.log(level, "%s %s %s %.1fms", call, ids, outcome, ms)


def _answer(body, status=200):
    return flask.Response(json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _err(message: str) -> dict:
    """Docker's error answer; a message that quotes a hostile value at length
    (an option name of a megabyte) is cut, in the answer and in the log."""
    if len(message) > MAX_ERR:
        cut = MAX_ERR - 40
        message = f"{message[:cut]}... ({len(message) - cut} more characters)"
    return {"Err": message}
