"""Gunicorn settings, read from the same Settings as the app (DESIGN §3, §11)."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import threading
import time
import urllib.request
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
# design: THREADS defaults to 160, not 16: a worker serves at most THREADS -
# STREAM_RESERVE_THREADS streams (144), while 16 threads each stay free for /health and
# ordinary requests (issue #14); a task stream that caught up moves to the worker's fan-out
# thread and frees its request thread (issue 19; docs/configuration.md "Sizing threads").
threads = _settings.threads
bind = [f"[{_settings.bind_address}]:{_settings.port}" if ":" in _settings.bind_address
        else f"{_settings.bind_address}:{_settings.port}"]
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = 5
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
loglevel = _settings.log_level
# design: the access line per request is written by the app (mcp/observability.py), which knows
# the request id and the key name; gunicorn's own is switched off so there is one line, not two.
accesslog = None
errorlog = "-"
if _settings.log_format == "json":
    # design: gunicorn's own lines (booting, worker timeouts, tracebacks) in the same JSON shape
    # as the app's, so every line on stderr parses.
    logconfig_dict = {
        "root": {"level": _settings.log_level.upper(), "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"level": _settings.log_level.upper(), "handlers": ["error_console"],
                               "propagate": False, "qualname": "gunicorn.error"},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False,
                                "qualname": "gunicorn.access"},
        },
        "handlers": {"error_console": {"class": "logging.StreamHandler", "formatter": "json",
                                       "stream": "ext://sys.stderr"}},
        "formatters": {"json": {"()": "pythonjsonlogger.json.JsonFormatter",
                                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                                "rename_fields": {"asctime": "time", "levelname": "level"}}},
    }
wsgi_app = "app:app"
proc_name = "mcp-orchestrator"
# design: gunicorn's control socket defaults to one path per user ($HOME/.gunicorn), which two
# instances on one host (tests, scale-out, a deploy switching releases) would fight over; each
# instance keeps its own beside its data, which is also writable under systemd's ProtectHome.
control_socket = str((Path(_settings.data_dir) / "gunicorn.ctl").resolve())


# The master learns from this pipe which workers have booted (loaded the app and warmed up).
_booted_r, _booted_w = os.pipe()
# never block a booting worker: after READY nobody reads, and recycled workers keep reporting
os.set_blocking(_booted_w, False)
# design: gunicorn says READY=1 to systemd as soon as it listens, before any worker has loaded
# the app, so a release that cannot even import passed `systemctl start`. The socket is taken
# from gunicorn here and used once every worker has booted and /health answers 200.
_notify_socket = None


def on_starting(server):
    os.environ["SERVICE_STARTED_AT"] = str(time.time())  # the service_start_time_seconds of every worker
    if _settings.threads - _settings.stream_reserve_threads < 1 or _settings.max_streams < 1:
        server.log.warning("THREADS=%s leaves no thread for streams beside STREAM_RESERVE_THREADS=%s "
                           "(or MAX_STREAMS=%s): every SSE stream will be refused with 503", _settings.threads,
                           _settings.stream_reserve_threads, _settings.max_streams)
    global _notify_socket
    _notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    # design: Ctrl-C (SIGINT to the process group) and SIGQUIT take SIGTERM's path: workers hand
    # their tasks back to the store instead of being cut off after GRACEFUL_TIMEOUT.
    server.handle_int = server.handle_quit = server.handle_term
    if _settings.metrics_enabled:
        # samples of a previous run's processes would be added to this run's
        shutil.rmtree(_metrics_dir, ignore_errors=True)
        _metrics_dir.mkdir(parents=True, exist_ok=True)
    if not _settings.is_loopback_bind and not (_settings.api_keys or _settings.api_keys_file):
        raise SystemExit(
            f"refusing to bind {_settings.bind_address}: no API_KEYS or API_KEYS_FILE configured "
            "(bind 127.0.0.1, or configure keys)")
    _preload_default_provider()


def _preload_default_provider() -> None:
    """Import the default provider's SDK and the web stack here, once, in the master.

    design: every worker finishes its warm-up before it takes requests; the SDK import is most
    of that warm-up (seconds on a busy host), and four workers importing it at once on a small
    host pushed `start -> healthy` past 5 s. Imported before fork, each worker has it for free
    (the modules are shared copy-on-write); importing starts no thread and opens nothing."""
    import importlib

    from mcp.catalog import CHAT_SERVICES, Catalog
    from orchestration.providers import PROVIDERS

    from mcp.errors import ValidationError

    try:
        name = Catalog(_settings).resolve_provider(None)
        if name in CHAT_SERVICES:
            importlib.import_module(PROVIDERS[CHAT_SERVICES[name].module].split(":")[0])
            _preload_optional("anyio._backends._asyncio")
    except (ValidationError, KeyError):
        pass  # an unknown LLM_PROVIDER is reported where it is used, not here
    # the web stack, for the same reason (the app itself is built in each worker, after fork:
    # its runtime starts threads and its metrics are per process)
    for module in ("flask", "flask_limiter", "flask_cors", "marshmallow", "apispec", "asgiref.sync",
                   "pythonjsonlogger.json", "orjson", "redis"):
        importlib.import_module(module)


def _preload_optional(module: str) -> None:
    """design: the asyncio backend of anyio, on which both SDKs' connection pools run, is
    imported at a process's first connection (each worker's warm-up, Provider.warm_up, pays
    it otherwise: 30 ms of CPU per worker). A private module of anyio: if a release of anyio
    moves it, the warm-up still imports whatever it became."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        pass


def when_ready(server):
    threading.Thread(target=_announce_ready, args=(server,), name="ready", daemon=True).start()


def _announce_ready(server) -> None:
    """Wait until every current worker has booted and /health answers 200, then log it and
    tell systemd (when started by it)."""
    booted: set[int] = set()
    host = "127.0.0.1" if _settings.bind_address in ("0.0.0.0", "", "127.0.0.1") else _settings.bind_address
    host = "[::1]" if host in ("::", "::1") else (f"[{host}]" if ":" in host else host)
    url = f"http://{host}:{_settings.port}/health"
    while True:
        if select.select([_booted_r], [], [], 0.2)[0]:
            booted.update(int(p) for p in os.read(_booted_r, 4096).split())
        workers = set(server.WORKERS)
        if len(workers) < server.num_workers or not workers <= booted:
            continue
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status != 200:
                    continue
        except OSError:
            time.sleep(0.2)
            continue
        server.log.info("ready: %d workers booted, /health is healthy", len(workers))
        if _notify_socket:
            try:
                _sd_notify(_notify_socket, f"READY=1\nSTATUS=serving with {len(workers)} workers\nMAINPID={os.getpid()}")
            except OSError as exc:  # the listener (systemd, service_manager.py start) is gone
                server.log.warning("could not tell %s that the service is ready: %s", _notify_socket, exc)
        return


def _sd_notify(address: str, state: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect("\0" + address[1:] if address.startswith("@") else address)
        sock.sendall(state.encode())


def post_fork(server, worker):
    """Start this worker's runtime loop before the app is loaded into it."""
    from mcp.bridge import process_loop

    process_loop()


def pre_request(worker, req):
    """Hand the request to mcp.keepalive, which closes the connection when a response goes
    out before a large body was read (gunicorn ignores an app's `Connection` header)."""
    from mcp.keepalive import bind_request

    worker.log.debug("%s %s", req.method, req.path)
    bind_request(req)


def post_worker_init(worker):
    """Before this worker takes requests: finish its warm-up (so the first task does not pay
    for it), report it booted to the master, and make SIGTERM, SIGINT and SIGQUIT begin the
    graceful stop at once (tasks hand back their leases, SSE clients are told to reconnect)
    while gunicorn drains requests."""
    runtime = _runtime(worker)
    if runtime is not None:
        # design: gthread gives the app the client socket (`gunicorn.socket`), so a task stream
        # that has caught up can leave its request thread for the fan-out thread (issue 19).
        runtime.hub.enable_handoff()
    if runtime is not None and not runtime.wait_warm(_settings.timeout):
        worker.log.warning("warm-up did not finish in %s s; taking requests anyway", _settings.timeout)
    try:
        os.write(_booted_w, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # the pipe is full: the master was told long ago, it is ready

    def on_stop(signum, frame):
        if runtime is not None:
            runtime.begin_stop()
        worker.handle_exit(signum, frame)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, on_stop)


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
