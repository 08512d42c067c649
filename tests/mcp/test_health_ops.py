"""What /health and / tell an operator: a missing DOCS_DIR, the MCP endpoint behind a proxy,
and live workers that are really live."""

from __future__ import annotations

import dataclasses
import time

from app import create_app


def test_a_missing_docs_dir_makes_health_degraded(settings, tmp_path):
    app = create_app(dataclasses.replace(settings, docs_dir=str(tmp_path / "no-docs")))
    try:
        health = app.test_client().get("/health")
        assert health.status_code == 200 and health.get_json()["status"] == "degraded"
        assert "does not exist" in health.get_json()["checks"]["sources"]["local"]["error"]
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()


def test_behind_a_proxy_the_advertised_mcp_endpoint_is_the_prefix_itself(settings):
    app = create_app(dataclasses.replace(settings, public_base_path="/mcp"))
    try:
        endpoints = app.test_client().get("/").get_json()["endpoints"]
        assert endpoints["mcp"] == "/mcp" and endpoints["health"] == "/mcp/health"
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
    direct = create_app(settings)
    try:
        assert direct.test_client().get("/").get_json()["endpoints"]["mcp"] == "/mcp"
    finally:
        direct.extensions["mcp_orchestrator"].runtime.stop()


def test_a_stopped_worker_leaves_live_workers_at_once(app):
    svc = app.extensions["mcp_orchestrator"]
    deadline = time.monotonic() + 10
    while svc.runtime.worker_id not in {w["worker"] for w in svc.store.live_workers()}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    svc.runtime.stop()
    assert svc.runtime.worker_id not in {w["worker"] for w in svc.store.live_workers()}
