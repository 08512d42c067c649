"""Logging: JSON lines (or text) with the request id, client address, task id and key name on
each line."""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from typing import Any

from flask import Flask, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from . import jsonio
from .locality import client_address
from .settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_LOWER = REQUEST_ID_HEADER.lower()
REQUEST_ID_ENVIRON = "mcp.request_id"  # where ResponseHeaders finds it
# The task a log line is about; set by the runtime around a task's coroutines, which
# asyncio copies into every agent's task.
current_task_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("task_id", default=None)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# (lower-case name, name, value): a response's header names are read once.
SECURITY_HEADER_ITEMS = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS.items())


class ResponseHeaders:
    """WSGI middleware: every response leaves with its request's X-Request-ID, and with each
    security header it does not set itself (the console's pages set their own CSP).

    design: written into the WSGI header list rather than onto the Flask response in an
    after_request hook, where werkzeug checked each of these six headers when it was set
    and again when the response's headers were copied out for WSGI: a thirtieth of a cheap
    MCP call (issue 19)."""

    def __init__(self, wsgi_app: Any):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            if REQUEST_ID_LOWER in present:
                headers[:] = [(name, value) for name, value in headers if name.lower() != REQUEST_ID_LOWER]
            headers.append((REQUEST_ID_HEADER, environ.get(REQUEST_ID_ENVIRON, "")))
            headers.extend([(name, value) for lower, name, value in SECURITY_HEADER_ITEMS if lower not in present])
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


class ContextFilter(logging.Filter):
    """Adds request_id, client and key_name from the current request, and task_id from the
    running task, when there are such."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = getattr(g, "request_id", None)
            record.client = getattr(g, "client_address", None)
            record.key_name = getattr(g, "api_key_name", None)
        task_id = current_task_id.get()
        if task_id and not hasattr(record, "task_id"):
            record.task_id = task_id
        return True


def log_json(value: Any, **_: Any) -> str:
    """A JSON log line by the service's one set of rules (jsonio): a lone surrogate in a
    logged value is written as U+FFFD, so every line parses in a strict reader (Loki, jq)."""
    return jsonio.dumps(value)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"},
                                           json_serializer=log_json))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def init_app(app: Flask, settings: Settings) -> None:
    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        valid = 0 < len(incoming) <= 128 and all(c.isalnum() or c in "-_.:" for c in incoming)
        # 32 random hex digits, as uuid4().hex was
        g.request_id = request.environ[REQUEST_ID_ENVIRON] = incoming if valid else os.urandom(16).hex()
        g.client_address = client_address(settings)
        g.request_started = time.perf_counter()

    @app.after_request
    def log_access(response):
        if ACCESS_LOG.isEnabledFor(logging.INFO):  # no line to write, no fields to gather
            _log_access_on_close(response)
        return response

    app.wsgi_app = ResponseHeaders(app.wsgi_app)

    if settings.cors_origins:
        from flask_cors import CORS

        CORS(app, origins=list(settings.cors_origins), supports_credentials=False,
             allow_headers=["Content-Type", "Authorization", "X-API-Key", "Last-Event-ID", "Mcp-Session-Id",
                            "MCP-Protocol-Version", "X-Request-ID"],
             expose_headers=["Mcp-Session-Id", "X-Request-ID", "Retry-After"])
    if settings.sentry_dsn:
        init_sentry(settings)


ACCESS_LOG = logging.getLogger("mcp.access")


def _log_access_on_close(response) -> None:
    """One access line per request, written when the response has been sent (for a stream,
    when it ends). It names the route's rule (`/tasks/<task_id>`), never the query string,
    which may carry secrets."""
    fields = {
        "request_id": getattr(g, "request_id", None),
        "key_name": getattr(g, "api_key_name", None),
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule else None,
        "path": request.path,
        "status": response.status_code,
    }
    started = getattr(g, "request_started", time.perf_counter())

    def write() -> None:
        fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        ACCESS_LOG.info("%s %s %s", fields["method"], fields["route"] or fields["path"], fields["status"],
                        extra=fields)

    response.call_on_close(write)


def init_sentry(settings: Settings) -> None:
    """Errors (and sampled traces) to Sentry; no request bodies, headers or user data."""
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration

    from .version import release

    sentry_sdk.init(dsn=settings.sentry_dsn, environment=settings.sentry_environment, release=release(),
                    traces_sample_rate=settings.sentry_traces_sample_rate,
                    integrations=[FlaskIntegration()], max_request_body_size="never")
