"""Gunicorn settings, read from the same Settings as the app (DESIGN §3, §11)."""

from __future__ import annotations

import signal

from mcp.settings import Settings

_settings = Settings.from_env()

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


def on_starting(server):
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


def worker_exit(server, worker):
    runtime = _runtime(worker)
    if runtime is not None:
        runtime.stop()


def _runtime(worker):
    from mcp.services import EXTENSION

    app = getattr(worker, "wsgi", None)
    ext = getattr(app, "extensions", {}).get(EXTENSION)
    return ext.runtime if ext else None
