"""Service info, health, liveness and stats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, request

from .. import SERVICE_NAME, __version__
from ..errors import error_response
from ..services import services
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
    return jsonify({
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
        },
    })


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
                           "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:  # noqa: BLE001 - the health check reports it, that is its job
        checks["store"] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        webhooks, status = 0, "unhealthy"
    loop_ok = svc.runtime.loop.running
    checks["runtime"] = {"status": "ok" if loop_ok else "error", **svc.runtime.info(), "live_workers": len(workers)}
    if not loop_ok and status == "healthy":
        status = "degraded"
    checks["sources"] = {name: {"status": "ok" if s.enabled else "disabled", **s.describe()}
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
    body = {
        "status": status,
        "service": SERVICE_NAME,
        "version": __version__,
        "uptime": round(time.time() - svc.started_at, 3),
        "active_streams": sum(int(w.get("active_streams", 0)) for w in workers),
        "registered_webhooks": webhooks,
        "checks": checks,
    }
    return jsonify(body), 503 if status == "unhealthy" else 200


@bp.get("/stats")
def stats():
    svc = services()
    workers = svc.store.live_workers()
    return jsonify({
        "active_streams": sum(int(w.get("active_streams", 0)) for w in workers),
        "registered_webhooks": svc.store.count_webhooks(),
        "tasks": svc.store.count_tasks_by_status(),
        "workers": workers,
    })
