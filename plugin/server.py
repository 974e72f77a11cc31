"""Serve the app on Docker's plugin sockets with gunicorn.

One app answers on calico.sock (NetworkDriver) and calico-ipam.sock
(IpamDriver); both announce both interfaces, so `--ipam-driver calico` works
as well as `calico-ipam`.  Threaded workers; the domain objects (and their
gRPC channels) are built in each worker after fork.

A BaseApplication, not gunicorn's Application: that one chdirs to its
`chdir` setting (by default the caller's working directory) and puts it first
on sys.path, which would let a root server import from wherever it was run.
"""

import errno
import gc
import logging
import os
import socket
import threading

from gunicorn.app.base import BaseApplication

from driver.network_driver import NetworkDriver
from metrics import instruments
from plugin import services, startup
from plugin.app import create_app
from plugin.config import Config
from plugin.metrics import CALL_NAMES

LOG = logging.getLogger(__name__)
SOCKETS = ("calico.sock", "calico-ipam.sock")


class AlreadyServed(Exception):
    pass


def socket_paths(plugin_dir: str, names=SOCKETS) -> list[str]:
    return [os.path.join(plugin_dir, name) for name in names]


def claim_sockets(paths) -> None:
    """Refuse to start when another instance answers on our sockets; remove
    socket files a dead instance left behind."""
    for path in paths:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if not os.path.exists(path):
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                raise
            os.unlink(path)
        else:
            raise AlreadyServed(
                f"another calico-libnetwork is already serving {path}; stop it first "
                "(e.g. systemctl stop calico-libnetwork) or use --plugin-dir")
        finally:
            probe.close()


IDLE_CONNECTION_SECONDS = 86400


class PluginServer(BaseApplication):
    def __init__(self, config: Config, paths, workers: int = 1, threads: int = 16,
                 complete_start: bool = False, metrics_dir: str | None = None):
        self.config = config
        self.complete_start = complete_start
        self.metrics_dir = metrics_dir
        self.options = {
            "bind": [f"unix:{p}" for p in paths],
            "umask": 0o077,  # the sockets are root-only
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "timeout": 60,
            "graceful_timeout": 20,
            # dockerd's plugin client (moby pkg/plugins) keeps idle connections
            # without a limit; when the server closes one just as dockerd sends
            # on it, dockerd retries with the request's body already consumed,
            # so an empty one ("PoolID is required", seen under load with
            # gunicorn's 2 s).  The plugin never closes an idle connection first.
            "keepalive": IDLE_CONNECTION_SECONDS,
            "accesslog": None,
            "loglevel": "debug" if config.debug else "info",
            "proc_name": "calico-libnetwork",
            # No control socket: gunicorn would put it in ~/.gunicorn/, one
            # path shared by every instance on the host.
            "control_socket_disable": True,
            "pre_fork": _pre_fork,
            "post_worker_init": self._post_worker_init,
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return create_app(lambda: services.build(self.config))

    def _post_worker_init(self, worker) -> None:
        if self.metrics_dir is not None:  # after fork: the files are this worker's
            instruments.enable_plugin(self.metrics_dir, CALL_NAMES)
        if self.complete_start:
            # In the worker, not the arbiter: its etcd client must not live
            # through gunicorn's forks.
            threading.Thread(target=startup.complete_when_etcd_answers, args=(self.config,),
                             daemon=True, name="complete-start").start()
        _build_services(worker)


def _pre_fork(server, worker) -> None:
    # What the arbiter holds is shared with the worker until written: its
    # objects moved out of the collector's reach, the worker's collections
    # do not write to them (Python's gc.freeze advice for fork without exec).
    gc.freeze()


def serve(config: Config, paths, complete_start: bool = False,
          metrics_dir: str | None = None) -> None:
    """Serve on `paths` (claimed first with claim_sockets) until SIGTERM;
    `complete_start`: the start's etcd steps are still to do (etcd did not
    answer), and the worker does them once etcd answers; `metrics_dir`: the
    workers count their calls there (plugin/metrics.py)."""
    LOG.info("serving %s for node %s, etcd %s", ", ".join(paths),
             config.nodename, ",".join(config.etcd.endpoints))
    PluginServer(config, paths, complete_start=complete_start, metrics_dir=metrics_dir).run()


def _build_services(worker) -> None:
    """Build the domain objects as the worker starts rather than at dockerd's
    first call: the pool watch and the endpoint sweep start with them."""
    try:
        worker.wsgi.extensions["calico_services"].get(NetworkDriver)
    except Exception as exc:  # noqa: BLE001 - the first request builds them then
        LOG.warning("not ready yet (%s); the first request will try again", exc)
