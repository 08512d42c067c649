"""Gunicorn settings, read from the same Settings as the app (DESIGN §3, §11)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from mcp.settings import Settings

_settings = Settings.from_env()

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
    os.environ["SERVICE_STARTED_AT"] = str(time.time())  # the service_start_time_seconds of every worker
    if _settings.metrics_enabled:
        # samples of a previous run's processes would be added to this run's
        shutil.rmtree(_metrics_dir, ignore_errors=True)
        _metrics_dir.mkdir(parents=True, exist_ok=True)
    if not _settings.is_loopback_bind and not (_settings.api_keys or _settings.api_keys_file):
        raise SystemExit(
            f"refusing to bind {_settings.bind_address}: no API_KEYS or API_KEYS_FILE configured "
            "(bind 127.0.0.1, or configure keys)")
    _preload()


# Third-party packages every worker imports; none starts a thread or opens a file or a
# socket when imported. The app's own modules are not among them: mcp.metrics creates its
# multiprocess metric files per process, so it must be imported after the fork.
PRELOAD = ("flask", "flask_limiter", "flask_cors", "marshmallow", "apispec", "orjson", "redis")


def _preload():
    """design: imported once in the master, not once per worker after the fork. On two
    cores, four workers importing the same packages at once (and the provider SDK, the
    largest, in their warm-up) kept the first task after start waiting for CPU. The SDK is
    imported only for the default provider, so an extractive service does not carry it."""
    import importlib

    from mcp.catalog import CHAT_SERVICES, Catalog
    from mcp.errors import ValidationError
    from orchestration.providers import PROVIDERS

    packages = list(PRELOAD)
    try:
        name = Catalog(_settings).resolve_provider(None)
        packages.append(PROVIDERS[CHAT_SERVICES[name].module if name in CHAT_SERVICES else name].split(":")[0])
    except (ValidationError, KeyError):
        pass  # an unknown LLM_PROVIDER is reported where it is used, not here
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:  # a deployment without an optional package: its workers do without
            pass


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
