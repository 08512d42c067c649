"""HTTP blueprints and the request helpers they share."""

from __future__ import annotations

import functools
from typing import Any

import marshmallow
from flask import g, request

from .. import jsonio
from ..errors import ApiError, InvalidJson, ValidationError
from ..settings import Settings


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


def json_body(allow_empty: bool = True) -> dict[str, Any]:
    """The request body as a JSON object; 415 for another media type, 400 `invalid_json` for
    a body the JSON rules refuse (jsonio.loads), 400 `validation_error` for a non-object."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if allow_empty:
            return {}
        raise ValidationError("a JSON object body is required", {"fields": {"_body": ["missing"]}})
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json",
                                   {"content_type": request.content_type})
    try:
        body = jsonio.loads(raw)
    except jsonio.JsonRejected as exc:
        raise InvalidJson.from_rejection(exc) from None
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", {"fields": {"_body": ["expected an object"]}})
    return body


def load_query(schema: type[marshmallow.Schema]) -> dict[str, Any]:
    """Query-string arguments validated by `schema` (unknown ones refused)."""
    try:
        return schema().load(request.args.to_dict())
    except marshmallow.ValidationError as exc:
        raise ValidationError.from_marshmallow(exc) from None


def owner() -> str:
    """The API key name the request authenticated with; `anonymous` without keys."""
    return getattr(g, "api_key_name", None) or "anonymous"


def public_prefix(settings: Settings) -> str:
    """The path prefix clients see (`/mcp` behind Caddy): X-Forwarded-Prefix, else PUBLIC_BASE_PATH."""
    return path_prefix(request.headers.get("X-Forwarded-Prefix", "") or settings.public_base_path)


@functools.lru_cache(maxsize=256)
def path_prefix(given: str) -> str:
    """`given` as a path prefix (`/mcp`, or "" for none or one with a character a path
    segment must not hold); kept, as the prefixes a service is given are few."""
    prefix = "/" + given.strip().strip("/") if given.strip().strip("/") else ""
    return prefix if all(c.isalnum() or c in "/-_." for c in prefix) else ""


def task_urls(settings: Settings, task_id: str) -> dict[str, str]:
    return urls_under(public_prefix(settings))(task_id)


def urls_under(prefix: str):
    """A function task_id -> its public URLs under `prefix`, usable outside the request."""

    def urls(task_id: str) -> dict[str, str]:
        return {
            "stream_url": f"{prefix}/stream/{task_id}",
            "status_url": f"{prefix}/tasks/{task_id}",
            "result_url": f"{prefix}/tasks/{task_id}/result",
            "events_url": f"{prefix}/tasks/{task_id}/events",
            "report_url": f"{prefix}/tasks/{task_id}/report",
        }

    return urls
