"""Composition root (CONVENTIONS 1): builds the Flask app from Settings and wires its parts.

gunicorn serves `app:app`; tests call `create_app(settings)` with their own settings."""

from __future__ import annotations

from flask import Flask

from mcp import errors, jsonio, keepalive, metrics, oauth, observability, openapi, ratelimit, security, services
from mcp.bridge import process_loop
from mcp.builtin_tools import register_builtin_tools
from mcp.catalog import Catalog
from mcp.alerts import Alerts
from mcp.deadletter import DeadLetters
from mcp.flaskapp import ServiceFlask
from mcp.http import deadletter, health, legacy_sse, mcp_http, reports, streams, tasks, tools, ui, webhooks
from mcp.oauth import resource as oauth_resource
from mcp.protocol import McpServer
from mcp.runtime import TaskRuntime
from mcp.settings import Settings
from mcp.store import open_store
from mcp.streaming import StreamHub, stream_capacity
from mcp.tasks import TaskService
from mcp.tools import ToolRegistry
from mcp.webhooks import Webhooks


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    observability.configure_logging(settings)
    app = ServiceFlask("mcp-orchestrator")
    app.json = jsonio.JsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    store = open_store(settings.resolved_store_url)
    catalog = Catalog(settings, store)
    hub = StreamHub(store, capacity=stream_capacity(settings.threads, settings.stream_reserve_threads,
                                                   settings.max_streams),
                    max_streams=settings.max_streams, keepalive=settings.stream_keepalive)
    dead_letters = DeadLetters(store, Alerts(settings))
    hooks = Webhooks(settings, store, dead_letters=dead_letters)
    runtime = TaskRuntime(settings, store, catalog, hub, process_loop(), hooks, dead_letters)
    task_service = TaskService(store, runtime, catalog, hooks)
    registry = ToolRegistry()
    register_builtin_tools(registry, task_service, catalog)
    mcp_server = McpServer(settings, store, registry, task_service, dead_letters)
    errors.init_app(app, store.unavailable_errors)
    observability.init_app(app, settings)
    resource_server = oauth.resource_server(settings, store)
    security.init_app(app, settings, resource_server)
    limits = ratelimit.init_app(app, settings, store, dead_letters.alerts)
    metrics.init_app(app, settings)
    keepalive.init_app(app)
    services.init_app(app, services.Services(settings, store, catalog, hub, runtime, task_service, registry,
                                             mcp_server, limits, hooks, dead_letters, resource_server))
    for bp in (health.bp, tools.bp, tasks.bp, reports.bp, streams.bp, webhooks.bp, deadletter.bp, mcp_http.bp,
               legacy_sse.bp, openapi.bp, ui.bp, oauth_resource.bp):
        app.register_blueprint(bp)
    if settings.oauth_builtin:
        oauth.init_builtin_server(app, settings, store, limits.limiter)
    runtime.start()
    return app


def __getattr__(name: str):
    # design: `app = create_app()` for gunicorn, built on first access rather than at import,
    # so importing this module (tests, tools) reads no environment and starts nothing.
    if name == "app":
        globals()["app"] = create_app()
        return globals()["app"]
    raise AttributeError(name)


if __name__ == "__main__":
    # `python3 app.py`: the development server (mcp.devserver); production runs start.sh.
    from mcp.devserver import main

    raise SystemExit(main())
