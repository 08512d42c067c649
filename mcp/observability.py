"""Logging: JSON lines (or text) with the request id, task id and key name on each line."""

from __future__ import annotations

import logging
import sys
import uuid

from flask import Flask, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from .settings import Settings

REQUEST_ID_HEADER = "X-Request-ID"


class ContextFilter(logging.Filter):
    """Adds request_id and key_name from the current request, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = getattr(g, "request_id", None)
            record.key_name = getattr(g, "api_key_name", None)
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
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
        g.request_id = incoming if valid else uuid.uuid4().hex

    @app.after_request
    def echo_request_id(response):
        response.headers[REQUEST_ID_HEADER] = getattr(g, "request_id", "")
        return response
