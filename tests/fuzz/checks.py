"""What every answer to fuzzed input must be: never a 5xx, never a JSON-RPC internal error,
the documented error shape, and a body a client can parse (strict JSON: no lone surrogate,
no NaN), and a service that is still healthy afterwards."""

from __future__ import annotations

from typing import Any

import requests

from orchestration.safejson import loads

ENVELOPE = {"error", "message", "details"}
INTERNAL_ERROR = -32603


def read(response: requests.Response, limit: int = 4_000_000) -> bytes:
    """The body, or the start of an event stream (which may never end)."""
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        try:
            return next(response.iter_content(4096), b"")
        finally:
            response.close()
    return response.raw.read(limit, decode_content=True)


def documented_unavailable(status: int, body: bytes) -> bool:
    """The one 5xx the contract documents for a request: a `<source>_search` tool of a source
    the operator has not configured (503 `unavailable`, OpenAPI of POST /tools/{name})."""
    return status == 503 and b'"error":"unavailable"' in body and b"is disabled: " in body


def check_answer(response: requests.Response, what: str, rpc: bool = False) -> Any:
    """Assert the contract on one answer; returns its parsed JSON body, if any."""
    body = read(response)
    status = response.status_code
    assert status < 500 or documented_unavailable(status, body), f"{what}: HTTP {status}: {body[:500]!r}"
    kind = response.headers.get("Content-Type", "")
    if kind.startswith("text/event-stream"):
        assert status == 200, what
        return None
    if not body:
        assert status in (202, 204) or (300 <= status < 400), f"{what}: HTTP {status} with an empty body"
        return None
    if status >= 400:
        assert kind.startswith("application/json"), f"{what}: HTTP {status} as {kind}: {body[:200]!r}"
    elif not kind.startswith("application/json"):  # /metrics, documents, the console
        return None
    doc = loads(body)  # strict: what we send must parse anywhere
    if rpc and (isinstance(doc, list) or "jsonrpc" in doc):
        for message in doc if isinstance(doc, list) else [doc]:
            assert message.get("jsonrpc") == "2.0", f"{what}: {message}"
            if "error" in message:
                assert message["error"]["code"] != INTERNAL_ERROR, f"{what}: {message}"
                assert isinstance(message["error"]["message"], str)
    elif status >= 400:
        assert set(doc) == ENVELOPE, f"{what}: HTTP {status} {doc}"
        assert isinstance(doc["error"], str) and isinstance(doc["details"], dict)
    return doc


def check_tool_result(result: Any, what: str) -> None:
    """An MCP tools/call result: an isError result with text for bad input, never a crash."""
    assert isinstance(result, dict) and isinstance(result.get("content"), list), f"{what}: {result}"
    if result.get("isError"):
        assert result["content"] and result["content"][0]["type"] == "text", what


def assert_healthy(service: Any) -> None:
    health = service.get("/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] in ("healthy", "degraded"), health.text[:500]
