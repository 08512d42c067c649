"""Errors, mapped in one place (CONVENTIONS 4): service code raises these; this module turns
them, and every HTTP error Werkzeug raises, into the JSON envelope of DESIGN §4
`{"error": code, "message": ..., "details": {...}}`. JSON-RPC mapping lives with the MCP
dispatcher, which reads `ApiError.code` and `.details`."""

from __future__ import annotations

import logging
from typing import Any

import marshmallow
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .jsonio import JsonRejected

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ValidationError(ApiError):
    status, code = 400, "validation_error"

    @classmethod
    def from_marshmallow(cls, exc: marshmallow.ValidationError) -> ValidationError:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        fields = ", ".join(sorted(str(k) for k in messages))
        return cls(f"invalid input: {fields}", {"fields": messages})


class InvalidJson(ApiError):
    """A body refused by the JSON rules (mcp.jsonio.loads); `details.reason` says which."""

    status, code = 400, "invalid_json"

    @classmethod
    def from_rejection(cls, exc: JsonRejected) -> InvalidJson:
        return cls(f"the body is not acceptable JSON: {exc}", {"reason": exc.reason, "fields": {"_body": [str(exc)]}})


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "a valid API key is required", **kwargs: Any):
        headers = {"WWW-Authenticate": 'Bearer realm="mcp-orchestrator"', **(kwargs.pop("headers", None) or {})}
        super().__init__(message, headers=headers, **kwargs)


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Misdirected(ApiError):
    status, code = 421, "misdirected_request"


class NotAcceptable(ApiError):
    status, code = 406, "not_acceptable"


class Conflict(ApiError):
    status, code = 409, "conflict"


class TooManyRequests(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


class UpstreamError(ApiError):
    """A search API or a fetched page failed: not the client's fault, not ours."""

    status, code = 502, "upstream_error"


class SourceFailed(UpstreamError):
    """A search source failed for one query (its API out of reach, or an answer of another
    shape than the API documents); the message names the source and what was wrong."""

    code = "source_error"


HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    421: "misdirected_request",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    501: "not_implemented",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None):
    response = jsonify({"error": code, "message": message, "details": details or {}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.own_retry_after = response.headers.get("Retry-After")
    return response


def init_app(app: Flask, unavailable: tuple[type[BaseException], ...] = ()) -> None:
    """JSON errors for the app; `unavailable` are the store's "out of reach" exceptions
    (Store.unavailable_errors), answered 503."""
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(marshmallow.ValidationError)
    def validation_error(exc: marshmallow.ValidationError):
        return api_error(ValidationError.from_marshmallow(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() in ("allow", "retry-after")}
        return error_response(status, HTTP_CODES.get(status, "http_error"), exc.description or exc.name, {}, headers)

    def store_down(exc: Exception):
        log.warning("store unavailable: %s", exc)
        return error_response(503, "unavailable", "the store is unavailable; retry shortly", {},
                              {"Retry-After": "5"})

    for error in unavailable:
        app.register_error_handler(error, store_down)

    @app.after_request
    def keep_own_retry_after(response):
        # design: flask-limiter's header injection (registered after this, so run before it)
        # stretches any Retry-After to the end of its rate-limit window, up to a minute; an
        # error that says when to come back (a refused stream: 2 s, the store: 5 s) keeps its own.
        own = getattr(response, "own_retry_after", None)
        if own is not None:
            response.headers["Retry-After"] = own
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # design: a bug is logged with its traceback and answered as JSON; it is not hidden.
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
