"""Prometheus metrics with prometheus-flask-exporter (DESIGN §11).

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set before anything imports prometheus_client
(gunicorn.conf.py does it), every worker writes its samples there, and `/metrics` on any
worker aggregates all of them. Without it (tests, a single process) an app-local registry
is used. The service's own metrics are defined once here and attached to either."""

from __future__ import annotations

import os

from flask import Flask
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
    "streaming_capacity_connections", "SSE streams the live workers may hold at once (STREAM_RESERVE_THREADS "
    "threads of each kept for other requests)", multiprocess_mode="livesum", registry=None)
STREAMS_REFUSED = Counter(
    "streaming_refused_total", "Streams refused with 503 because the worker held its capacity", registry=None)
LLM_TOKENS = Counter("llm_tokens_total", "LLM tokens used", ["model", "kind"], registry=None)
LLM_COST = Counter("llm_cost_usd_total", "LLM spend in USD", ["model"], registry=None)
WEBHOOK_DELIVERIES = Counter("webhook_deliveries_total", "Webhook delivery attempts", ["result"], registry=None)
SERVICE_METRICS = (ORCHESTRATION_DURATION, ORCHESTRATION_TASKS, STREAMS, STREAM_CAPACITY, STREAMS_REFUSED, LLM_TOKENS,
                   LLM_COST, WEBHOOK_DELIVERIES)


def init_app(app: Flask, settings: Settings) -> None:
    if not settings.metrics_enabled:
        return
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        GunicornInternalPrometheusMetrics(app, group_by="endpoint")
        return
    from prometheus_flask_exporter import PrometheusMetrics

    registry = CollectorRegistry()
    for metric in SERVICE_METRICS:
        registry.register(metric)
    PrometheusMetrics(app, registry=registry, group_by="endpoint")


def record_task(orchestrator: str, status: str, seconds: float, usage: dict) -> None:
    """Account one finished task: its outcome, duration, tokens and cost by model."""
    ORCHESTRATION_TASKS.labels(orchestrator, status).inc()
    ORCHESTRATION_DURATION.labels(orchestrator, status).observe(seconds)
    for model, row in (usage.get("by_model") or {}).items():
        LLM_TOKENS.labels(model, "input").inc(row.get("input_tokens", 0))
        LLM_TOKENS.labels(model, "output").inc(row.get("output_tokens", 0))
        LLM_COST.labels(model).inc(row.get("cost_usd", 0.0))
