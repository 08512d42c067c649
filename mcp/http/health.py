"""Service info, health, liveness and stats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, redirect, request

from .. import SERVICE_NAME, __version__
from ..errors import error_response
from ..services import Services, services
from ..version import release
from . import public_prefix

bp = Blueprint("health", __name__)


@bp.get("/")
def index():
    svc = services()
    if "text/event-stream" in request.headers.get("Accept", ""):
        # design: an MCP client probing for a server stream on the root endpoint.
        return error_response(405, "method_not_allowed", "no server-initiated stream here; POST MCP requests",
                              headers={"Allow": "GET, POST"})
    prefix = public_prefix(svc.settings)
    if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
        # a browser: the console (JSON clients, and curl's */*, keep the service info)
        response = redirect(f"{prefix}/ui/", 302)
        response.vary.add("Accept")
        return response
    response = jsonify({
        "name": SERVICE_NAME,
        "version": __version__,
        "release": release(),
        "orchestrators": ["research", "search"],
        "endpoints": {
            # design: behind a proxy the prefix itself is the MCP endpoint (https://HOST/mcp reaches POST /)
            "mcp": prefix or "/mcp",
            "legacy_sse": f"{prefix}/sse",
            "health": f"{prefix}/health",
            "tools": f"{prefix}/tools",
            "tasks": f"{prefix}/tasks",
            "stream": f"{prefix}/stream/<task_id>",
            "openapi": f"{prefix}/openapi.json",
            "metrics": f"{prefix}/metrics",
            "ui": f"{prefix}/ui/",
        },
    })
    response.vary.add("Accept")
    return response


@bp.get("/health/live")
def live():
    return jsonify({"status": "alive", "service": SERVICE_NAME})


@bp.get("/health")
def health():
    svc = services()
    checks: dict[str, Any] = {}
    status = "healthy"
    workers: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        svc.store.ping()
        workers = svc.store.live_workers()
        webhooks = svc.store.count_webhooks()
        checks["store"] = {"status": "ok", "backend": svc.settings.resolved_store_url.split(":", 1)[0],
                           "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                           "size": svc.store.size()}
        if checks["store"]["size"].get("nearly_full"):
            # design: degrade before the store is full, while writes still succeed, so the
            # operator is told in time (Redis refuses writes at maxmemory; SQLite at a full disk)
            checks["store"]["status"], status = "nearly_full", "degraded"
    except Exception as exc:  # noqa: BLE001 - the health check reports it, that is its job
        checks["store"] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        webhooks, status = 0, "unhealthy"
    loop_ok = svc.runtime.loop.running
    checks["runtime"] = {"status": "ok" if loop_ok else "error", **svc.runtime.info(), "live_workers": len(workers)}
    if not loop_ok and status == "healthy":
        status = "degraded"
    checks["sources"] = {name: {"status": "ok" if s.enabled else "disabled", **s.describe(),
                                "last_error": svc.catalog.last_source_error(name)}
                         for name, s in svc.catalog.sources.items()}
    if not Path(svc.settings.docs_dir).is_dir():
        checks["sources"]["local"]["status"] = "degraded"
        checks["sources"]["local"]["error"] = f"DOCS_DIR {svc.settings.docs_dir} does not exist"
        if status == "healthy":
            status = "degraded"  # design: the embedded default's only source is gone; operators should see it
    checks["plugins"] = {"status": "error" if any(p["status"] != "ok" for p in svc.tools.plugins) else "ok",
                         "loaded": svc.tools.plugins}
    if checks["plugins"]["status"] == "error" and status == "healthy":
        status = "degraded"  # design: the service runs without the broken plug-in; operators should see it
    checks["provider"] = {"status": "ok", "default": svc.catalog.resolve_provider(None)}
    streams = stream_capacity_report(svc, workers)
    body = {
        "status": status,
        "service": SERVICE_NAME,
        "version": __version__,
        "uptime": round(time.time() - svc.started_at, 3),
        "active_streams": streams["open"],
        "streams": streams,
        "registered_webhooks": webhooks,
        "checks": checks,
    }
    return jsonify(body), 503 if status == "unhealthy" else 200


def stream_capacity_report(svc: Services, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Streams open and the most each live worker may hold (DESIGN §13), from the workers'
    heartbeats, with this worker's own numbers as of now."""
    rows = {w["worker"]: {"worker": w["worker"], "open": int(w.get("active_streams", 0)),
                          "capacity": int(w.get("stream_capacity", svc.hub.capacity))} for w in workers}
    here = svc.runtime.worker_id
    rows[here] = {"worker": here, "open": svc.hub.active_streams, "capacity": svc.hub.capacity}
    per_worker = sorted(rows.values(), key=lambda row: row["worker"])
    return {"open": sum(r["open"] for r in per_worker), "capacity": sum(r["capacity"] for r in per_worker),
            "workers": per_worker}


@bp.get("/stats")
def stats():
    svc = services()
    workers = svc.store.live_workers()
    streams = stream_capacity_report(svc, workers)
    return jsonify({
        "active_streams": streams["open"],
        "streams": streams,
        "registered_webhooks": svc.store.count_webhooks(),
        "tasks": svc.store.count_tasks_by_status(),
        "workers": workers,
    })
