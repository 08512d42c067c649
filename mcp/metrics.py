"""Prometheus metrics with prometheus-flask-exporter (DESIGN §11).

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set before anything imports prometheus_client
(gunicorn.conf.py does it), every worker writes its samples there, and `/metrics` on any
worker aggregates all of them. Without it (tests, a single process) an app-local registry
is used. The service's own metrics are defined once here and attached to either."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .settings import Settings

ORCHESTRATION_DURATION = Histogram(
    "orchestration_duration_seconds", "Wall time of finished orchestrations", ["orchestrator", "status"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=None)
ORCHESTRATION_TASKS = Counter(
    "orchestration_tasks_total", "Orchestrations finished, by outcome", ["orchestrator", "status"], registry=None)
STREAMS = Gauge(
    "streaming_active_connections", "Open SSE streams", multiprocess_mode="livesum", registry=None)
STREAM_CAPACITY = Gauge(
    "streaming_capacity_connections", "SSE streams the live workers may hold at once (MAX_STREAMS each, "
    "of which THREADS - STREAM_RESERVE_THREADS may hold a request thread)", multiprocess_mode="livesum", registry=None)
STREAMS_REFUSED = Counter(
    "streaming_refused_total", "Streams refused with 503 because the worker held its capacity", registry=None)
LLM_TOKENS = Counter("llm_tokens_total", "LLM tokens used", ["model", "kind"], registry=None)
LLM_COST = Counter("llm_cost_usd_total", "LLM spend in USD", ["model"], registry=None)
WEBHOOK_DELIVERIES = Counter("webhook_deliveries_total", "Webhook delivery attempts", ["result"], registry=None)
STORE_BYTES = Gauge("store_bytes", "Bytes the store holds (SQLite pages in use, Redis used_memory)",
                    multiprocess_mode="mostrecent", registry=None)
STORE_LIMIT_BYTES = Gauge("store_limit_bytes", "Bytes the store may grow to (SQLite: file plus free disk; "
                          "Redis: maxmemory, 0 when unlimited)", multiprocess_mode="mostrecent", registry=None)
STORE_ROWS = Gauge("store_rows", "Rows (Redis: keys) per table, counted by the retention sweep", ["table"],
                   multiprocess_mode="mostrecent", registry=None)
SWEEP_RUNS = Counter("store_sweep_runs_total", "Retention sweeps run", registry=None)
SWEEP_REMOVED = Counter("store_sweep_removed_total", "Records removed by retention sweeps", ["kind"], registry=None)
DEAD_LETTER_ENTRIES = Gauge("dead_letter_entries", "Entries in the dead-letter list (tasks failed for good, "
                            "deliveries out of retries)", multiprocess_mode="mostrecent", registry=None)
RATE_LIMIT_BREACHES = Counter("rate_limit_breaches_total", "Rate-limit breaches, counted once per key, limit and "
                              "window", ["key", "limit"], registry=None)
MCP_REQUESTS = Histogram("mcp_request_duration_seconds", "MCP requests by JSON-RPC method (tools/call by tool)",
                         ["method", "tool"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                                      60, 120, 240), registry=None)
STORE_LATENCY = Histogram("store_operation_duration_seconds", "Duration of the store writes each worker makes "
                          "every few seconds (its heartbeat)", buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                                         0.1, 0.25, 0.5, 1, 2.5), registry=None)
LIVE_WORKERS = Gauge("workers_live", "Workers with a fresh heartbeat in the store (all hosts)",
                     multiprocess_mode="mostrecent", registry=None)
CONFIGURED_WORKERS = Gauge("workers_configured", "WORKERS of this host", multiprocess_mode="mostrecent",
                           registry=None)
SERVICE_STARTED = Gauge("service_start_time_seconds", "When the service (the gunicorn master) started, Unix time",
                        multiprocess_mode="max", registry=None)
STORE_UP = Gauge("store_up", "1 when this worker's last store write (its heartbeat) succeeded, else 0",
                 multiprocess_mode="livemin", registry=None)
AGENTS = Counter("orchestration_agents_total", "Worker agents of finished tasks, by outcome",
                 ["orchestrator", "status"], registry=None)
LLM_CALLS = Counter("llm_calls_total", "LLM calls made", ["model"], registry=None)
SOURCE_ERRORS = Counter("source_errors_total", "Searches of a source that failed inside an agent", ["source"],
                        registry=None)
WORKER_MEMORY = Gauge("worker_resident_memory_bytes", "Resident memory of each worker process",
                      multiprocess_mode="liveall", registry=None)
SERVICE_METRICS = (WORKER_MEMORY, AGENTS, LLM_CALLS, SOURCE_ERRORS, ORCHESTRATION_DURATION, ORCHESTRATION_TASKS,
                   STREAMS, STREAMS_REFUSED, LLM_TOKENS, LLM_COST, WEBHOOK_DELIVERIES,
                   STORE_BYTES, STORE_LIMIT_BYTES, STORE_ROWS, SWEEP_RUNS, SWEEP_REMOVED, DEAD_LETTER_ENTRIES,
                   RATE_LIMIT_BREACHES, MCP_REQUESTS, STORE_LATENCY, LIVE_WORKERS, CONFIGURED_WORKERS, SERVICE_STARTED, STREAM_CAPACITY, STORE_UP)


def init_app(app: Flask, settings: Settings) -> None:
    if not settings.metrics_enabled:
        return
    # gunicorn.conf.py sets SERVICE_STARTED_AT in the master, so every worker reports the same start
    SERVICE_STARTED.set(float(os.environ.get("SERVICE_STARTED_AT") or time.time()))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        exporter = GunicornInternalPrometheusMetrics(app, group_by="endpoint", export_defaults=False)
    else:
        from prometheus_flask_exporter import PrometheusMetrics

        registry = CollectorRegistry()
        for metric in SERVICE_METRICS:
            registry.register(metric)
        exporter = PrometheusMetrics(app, registry=registry, group_by="endpoint", export_defaults=False)
    RequestMetrics(exporter).init_app(app)


class RequestMetrics:
    """The request metrics prometheus-flask-exporter exports by default (`export_defaults`,
    grouped by endpoint): the same names, help, labels and buckets, the same requests counted
    (not those of views marked `do_not_track`, such as /metrics; an unhandled exception in
    flask_http_request_exceptions_total), recorded with less work.

    design: the exporter's own hooks were the largest single cost of a cheap request after
    the view (about 5 % of an MCP call): each probed the request proxy for attributes that
    are absent (an AttributeError each) and looked the labelled series up by keyword. Here
    the request object is fetched once, its flags are read from its __dict__, and the
    labelled series are kept per (method, endpoint, status)."""

    # the series kept at most; past it they are dropped all at once and looked up again
    KEPT = 4096

    def __init__(self, exporter: Any):
        registry = exporter.registry
        exporter.info("flask_exporter_info", "Information about the Prometheus Flask exporter",
                      version=exporter.version)
        self.duration = Histogram("flask_http_request_duration_seconds", "Flask HTTP request duration in seconds",
                                  ("method", "endpoint", "status"), registry=registry)
        self.total = Counter("flask_http_request_total", "Total number of HTTP requests", ("method", "status"),
                             registry=registry)
        self.exceptions = Counter("flask_http_request_exceptions_total",
                                  "Total number of HTTP requests which resulted in an exception",
                                  ("method", "status"), registry=registry)
        self._series: dict[tuple[str, Any, int], tuple[Any, Any]] = {}

    def init_app(self, app: Flask) -> None:
        app.before_request(self.start)
        app.after_request(self.record)
        app.teardown_request(self.record_exception)

    def _labelled(self, method: str, endpoint: Any, status: int) -> tuple[Any, Any]:
        key = (method, endpoint, status)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.KEPT:
                self._series.clear()
            series = self._series[key] = (self.duration.labels(method, endpoint, status),
                                          self.total.labels(method, status))
        return series

    @staticmethod
    def start() -> None:
        request._get_current_object().prom_start_time = time.perf_counter()

    def _observe(self, flags: dict[str, Any], method: str, endpoint: Any, status: int) -> None:
        """The duration and the count of one request, each once (the exporter's
        `_not_yet_handled`: after_request and teardown may both see a request)."""
        duration, total = self._labelled(method, endpoint, status)
        if "prom_start_time" in flags and "prom_duration_reported" not in flags:
            flags["prom_duration_reported"] = True
            duration.observe(max(time.perf_counter() - flags["prom_start_time"], 0))
        if "prom_total_reported" not in flags:
            flags["prom_total_reported"] = True
            total.inc()

    def record(self, response: Response) -> Response:
        req = request._get_current_object()
        flags = req.__dict__
        if "prom_do_not_track" not in flags and "prom_exclude_all" not in flags:
            status = response.status_code
            self._observe(flags, req.method, req.endpoint, status.value if isinstance(status, HTTPStatus) else status)
        return response

    def record_exception(self, exception: BaseException | None = None) -> None:
        if exception is None:
            return
        req = request._get_current_object()
        flags = req.__dict__
        if "prom_do_not_track" in flags or "prom_exclude_all" in flags:
            return
        self.exceptions.labels(req.method, 500).inc()
        self._observe(flags, req.method, req.endpoint, 500)


def record_task(orchestrator: str, status: str, seconds: float, usage: dict,
                agent_results: list[dict] | None = None) -> None:
    """Account one finished task: its outcome, duration, agents, and calls, tokens and cost by model."""
    ORCHESTRATION_TASKS.labels(orchestrator, status).inc()
    ORCHESTRATION_DURATION.labels(orchestrator, status).observe(seconds)
    for agent in agent_results or ():
        AGENTS.labels(orchestrator, str(agent.get("status") or "unknown")).inc()
    for model, row in (usage.get("by_model") or {}).items():
        LLM_CALLS.labels(model).inc(row.get("llm_calls", 0))
        LLM_TOKENS.labels(model, "input").inc(row.get("input_tokens", 0))
        LLM_TOKENS.labels(model, "output").inc(row.get("output_tokens", 0))
        LLM_COST.labels(model).inc(row.get("cost_usd", 0.0))


def record_sweep(removed: dict[str, int], size: dict, rows: dict[str, int]) -> None:
    """Account one retention sweep and what the store holds after it."""
    SWEEP_RUNS.inc()
    for kind, count in removed.items():
        SWEEP_REMOVED.labels(kind).inc(count)  # zero too: a panel shows 0 rather than "no data"
    STORE_BYTES.set(size.get("bytes") or 0)
    STORE_LIMIT_BYTES.set(size.get("limit_bytes") or 0)
    for table, count in rows.items():
        STORE_ROWS.labels(table).set(count)


def timed_mcp(method: str, handler: Callable[[dict, Any], Any]) -> Callable[[dict, Any], Any]:
    """`handler` of an MCP method, observed in mcp_request_duration_seconds."""

    series: dict[str, Any] = {}  # the labelled histogram per tool label, looked up once

    def run(params: dict, ctx: Any) -> Any:
        tool = params.get("name") if method == "tools/call" and isinstance(params.get("name"), str) else ""
        started = time.perf_counter()
        try:
            return handler(params, ctx)
        finally:
            # design: unknown tool names would make one series each; they are counted together
            label = tool if tool in KNOWN_TOOLS else ("other" if tool else "")
            observed = series.get(label)
            if observed is None:
                observed = series[label] = MCP_REQUESTS.labels(method, label)
            observed.observe(time.perf_counter() - started)

    return run


#: tool names that label mcp_request_duration_seconds (the registry adds the rest at start)
KNOWN_TOOLS: set[str] = set()


def record_event(event_type: str, data: dict | None) -> None:
    """Account what a task event tells: the sources that failed inside an agent."""
    errors = (data or {}).get("source_errors")
    if isinstance(errors, dict):
        for source in errors:
            SOURCE_ERRORS.labels(str(source)).inc()


def record_memory() -> None:
    """This process's resident memory (Linux /proc; elsewhere nothing)."""
    try:
        pages = int(open("/proc/self/statm").read().split()[1])
    except (OSError, ValueError, IndexError):
        return
    WORKER_MEMORY.set(pages * os.sysconf("SC_PAGE_SIZE"))
