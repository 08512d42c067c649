"""Gunicorn settings, read from the same Settings as the app (DESIGN §3, §11)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

from mcp import wire_errors
from mcp.settings import Settings

_settings = Settings.from_env()
wire_errors.install()  # Gunicorn's own 400/414/431 answers as JSON, not HTML

# design: prometheus_client picks its multiprocess mode from this variable at import time, so
# it is set here, in the master, before any worker imports the app.
_metrics_dir = Path(_settings.prometheus_multiproc_dir or Path(_settings.data_dir) / "prometheus")
if _settings.metrics_enabled:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir.resolve())

# design: gthread, not sync: an SSE stream holds its request thread, not a whole worker.
worker_class = "gthread"
workers = _settings.workers
threads = _settings.threads
bind = [f"[{_settings.bind_address}]:{_settings.port}" if ":" in _settings.bind_address
        else f"{_settings.bind_address}:{_settings.port}"]
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
loglevel = _settings.log_level
accesslog = None
errorlog = "-"
wsgi_app = "app:app"
proc_name = "mcp-orchestrator"
# design: gunicorn's control socket defaults to one path per user ($HOME/.gunicorn), which two
# instances on one host (tests, scale-out, a deploy switching releases) would fight over; each
# instance keeps its own beside its data, which is also writable under systemd's ProtectHome.
control_socket = str((Path(_settings.data_dir) / "gunicorn.ctl").resolve())


def on_starting(server):
    if _settings.metrics_enabled:
        # samples of a previous run's processes would be added to this run's
        shutil.rmtree(_metrics_dir, ignore_errors=True)
        _metrics_dir.mkdir(parents=True, exist_ok=True)
    if not _settings.is_loopback_bind and not (_settings.api_keys or _settings.api_keys_file):
        raise SystemExit(
            f"refusing to bind {_settings.bind_address}: no API_KEYS or API_KEYS_FILE configured "
            "(bind 127.0.0.1, or configure keys)")


def post_fork(server, worker):
    """Start this worker's runtime loop before the app is loaded into it."""
    from mcp.bridge import process_loop

    process_loop()


def post_worker_init(worker):
    """On SIGTERM, begin the graceful stop at once (tasks hand back their leases, SSE
    clients are told to reconnect) while gunicorn drains requests."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        _runtime(worker).begin_stop()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def child_exit(server, worker):
    if _settings.metrics_enabled:
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def worker_exit(server, worker):
    runtime = _runtime(worker)
    if runtime is not None:
        runtime.stop()


def _runtime(worker):
    from mcp.services import EXTENSION

    app = getattr(worker, "wsgi", None)
    ext = getattr(app, "extensions", {}).get(EXTENSION)
    return ext.runtime if ext else None
