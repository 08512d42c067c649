"""The OpenAPI 3 document of the HTTP API (DESIGN §4), built with apispec from the same
marshmallow schemas that validate requests, so the two cannot drift apart."""

from __future__ import annotations

import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, jsonify

from . import SERVICE_NAME, __version__
from .schemas import (
    EventsQuery,
    ListDeadLettersInput,
    ListTasksInput,
    ReportQuery,
    ResearchInput,
    SearchInput,
    SourceSearchInput,
    StatusInput,
    StreamQuery,
    TaskIdInput,
)

bp = Blueprint("openapi", __name__)

OBJECT = {"type": "object", "additionalProperties": True}
ERROR = {
    "type": "object",
    "required": ["error", "message", "details"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}},
}
NULLABLE_NUMBER = {"type": ["number", "null"]}
TASK_STATUS = {
    "type": "object",
    "required": ["task_id", "orchestrator", "status", "progress", "created_at"],
    "properties": {
        "task_id": {"type": "string"},
        "orchestrator": {"type": "string", "enum": ["research", "search"]},
        "status": {"type": "string", "enum": ["pending", "running", "completed", "failed", "cancelled"]},
        "progress": {"type": "number"},
        "created_at": {"type": "number"},
        "started_at": NULLABLE_NUMBER,
        "completed_at": NULLABLE_NUMBER,
        "stream_url": {"type": "string"},
        "status_url": {"type": "string"},
        "result_url": {"type": "string"},
        "report_url": {"type": "string"},
    },
}
HANDLE = {
    "type": "object",
    "required": ["task_id", "status"],
    "properties": {"task_id": {"type": "string"}, "status": {"type": "string"}, "stream_url": {"type": "string"},
                   "status_url": {"type": "string"}, "result_url": {"type": "string"}},
}
RESULT = {
    "type": "object",
    "required": ["task_id", "orchestrator", "status", "final_synthesis", "sources", "usage", "partial"],
    "properties": {
        "task_id": {"type": "string"},
        "orchestrator": {"type": "string"},
        "status": {"type": "string"},
        "final_synthesis": {"type": "string"},
        "sources": {"type": "array", "items": OBJECT},
        "agent_results": {"type": "array", "items": OBJECT},
        "usage": OBJECT,
        "partial": {"type": "boolean"},
    },
}
EVENT = {
    "type": "object",
    "required": ["id", "event_type", "task_id", "timestamp", "data"],
    "properties": {"id": {"type": "integer"}, "event_type": {"type": "string"}, "task_id": {"type": "string"},
                   "timestamp": {"type": "number"}, "data": {"type": "object"}},
}

DEAD_LETTER = {
    "type": "object",
    "required": ["id", "kind", "ref", "owner", "reason", "error", "created_at", "attempts"],
    "properties": {"id": {"type": "string"}, "kind": {"type": "string", "enum": ["task", "webhook"]},
                   "ref": {"type": "string"}, "owner": {"type": "string"}, "reason": {"type": "string"},
                   "error": {"type": ["string", "null"]}, "created_at": {"type": "number"},
                   "attempts": {"type": "integer"}},
}

# (method, path, summary, request body schema, query schema, {status: (description, schema)})
COMMON_ERRORS = {"401": "a valid API key is required", "429": "rate limited"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(description: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}


def _task_id_param() -> dict[str, Any]:
    return {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 100}}


@functools.cache
def build_spec() -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(SERVICE_NAME, __version__, "3.1.0", plugins=[plugin], info={
        "description": "Research and search orchestrators over HTTP. MCP is served at /mcp (not described here)."})
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"})
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", ERROR)
    for name, schema in (("ResearchInput", ResearchInput), ("SearchInput", SearchInput),
                         ("TaskIdInput", TaskIdInput), ("StatusInput", StatusInput),
                         ("ListTasksInput", ListTasksInput), ("SourceSearchInput", SourceSearchInput)):
        spec.components.schema(name, schema=schema)
    converter = plugin.converter
    secured = [{"ApiKey": []}, {"Bearer": []}]
    public: list[dict[str, Any]] = [{}]

    def operation(summary: str, responses: dict[str, Any], *, body: str | None = None,
                  query: Any = None, path_task: bool = False, security: Any = secured,
                  extra_params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {"summary": summary, "security": security, "responses": {
            **{code: _error(text) for code, text in (COMMON_ERRORS.items() if security is secured else ())},
            **responses}}
        params = [_task_id_param()] if path_task else []
        if query is not None:
            params += converter.schema2parameters(query(), location="query")
        params += extra_params or []
        if params:
            op["parameters"] = params
        if body:
            op["requestBody"] = _body(body)
            op["responses"].setdefault("400", _error("invalid input, naming the field"))
            op["responses"].setdefault("413", _error("body too large"))
            op["responses"].setdefault("415", _error("body is not JSON"))
        return op

    spec.path("/", operations={"get": operation("Service info", {"200": _ok("name, version, release", OBJECT)},
                                                security=public)})
    spec.path("/health", operations={"get": operation(
        "Health with checks", {"200": _ok("healthy or degraded", OBJECT), "503": _ok("unhealthy", OBJECT)},
        security=public)})
    spec.path("/health/live", operations={"get": operation("Liveness", {"200": _ok("alive", OBJECT)},
                                                           security=public)})
    spec.path("/stats", operations={"get": operation("Streams, webhooks, tasks by status",
                                                     {"200": _ok("stats", OBJECT)})})
    spec.path("/tools", operations={"get": operation("The tool registry", {"200": _ok("tools", OBJECT)})})
    for tool, body in (("orchestrate_research", "ResearchInput"), ("orchestrate_search", "SearchInput")):
        spec.path(f"/tools/{tool}", operations={"post": operation(
            f"Start {tool.split('_')[1]}", {"202": _ok("started", HANDLE), "200": {
                "description": "the result (wait: true), or the task's event stream (stream: true)",
                "content": {"application/json": {"schema": RESULT},
                            "text/event-stream": {"schema": {}}}}}, body=body)})
    spec.path("/tools/get_orchestration_status", operations={"post": operation(
        "Task status", {"200": _ok("status", TASK_STATUS), "404": _error("unknown task")}, body="StatusInput")})
    spec.path("/tools/cancel_orchestration", operations={"post": operation(
        "Cancel a task", {"200": _ok("status after the request", TASK_STATUS), "404": _error("unknown task"),
                          "409": _error("already finished")}, body="TaskIdInput")})
    spec.path("/tools/list_orchestrator_patterns", operations={"post": operation(
        "Orchestrators, providers and sources", {"200": _ok("patterns", OBJECT)})})
    spec.path("/tools/{name}", operations={"post": operation(
        "Call any registered tool with its arguments", {
            "200": _ok("the tool's output", OBJECT), "202": _ok("started work", HANDLE),
            "404": _error("unknown tool or task"), "409": _error("conflict"), "400": _error("invalid arguments"),
            "415": _error("body is not JSON"), "413": _error("body too large"), "503": _error("source disabled"),
            "502": _error("source_error: the source's API failed or answered an unexpected shape; upstream_error: "
                          "fetch_url could not read the page")},
        extra_params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}])})
    spec.path("/tasks", operations={"get": operation(
        "List tasks, newest first", {"200": _ok("a page of tasks", {
            "type": "object", "required": ["tasks", "next_cursor"],
            "properties": {"tasks": {"type": "array", "items": TASK_STATUS},
                           "next_cursor": {"type": ["string", "null"]}}}),
            "400": _error("invalid filter")}, query=ListTasksInput)})
    spec.path("/tasks/{task_id}", operations={"get": operation(
        "Status and progress", {"200": _ok("status", TASK_STATUS), "404": _error("unknown task")},
        path_task=True)})
    spec.path("/tasks/{task_id}/result", operations={"get": operation(
        "The result document", {"200": _ok("result", RESULT), "404": _error("unknown task"),
                                "409": _error("still running")}, path_task=True)})
    report_ok = {"description": "the report document (a 304 without body when If-None-Match matches)",
                 "headers": {"ETag": {"schema": {"type": "string"}},
                             "Content-Disposition": {"schema": {"type": "string"}}},
                 "content": {"text/markdown": {"schema": {"type": "string"}},
                             "text/html": {"schema": {"type": "string"}},
                             "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                             "application/vnd.openxmlformats-officedocument.wordprocessingml.document": {
                                 "schema": {"type": "string", "format": "binary"}}}}
    spec.path("/tasks/{task_id}/report", operations={"get": operation(
        "The report as Markdown, HTML, PDF or Word (by ?format= or Accept)", {
            "200": report_ok, "304": {"description": "not modified (If-None-Match)"},
            "400": _error("invalid query"), "404": _error("unknown task"),
            "406": _error("unknown format, or no acceptable media type"),
            "409": _error("still running (ask with partial=1)")},
        path_task=True, query=ReportQuery,
        extra_params=[{"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}}])})
    spec.path("/tasks/{task_id}/events", operations={"get": operation(
        "The event log", {"200": _ok("events", {"type": "object", "required": ["events"],
                                                "properties": {"events": {"type": "array", "items": EVENT}}}),
                          "400": _error("invalid query"), "404": _error("unknown task")},
        path_task=True, query=EventsQuery)})
    spec.path("/tasks/{task_id}/cancel", operations={"post": operation(
        "Request cancellation", {"202": _ok("status after the request", TASK_STATUS),
                                 "404": _error("unknown task"), "409": _error("already finished"),
                                 "400": _error("malformed body"), "415": _error("body is not JSON")},
        path_task=True)})
    spec.path("/stream/{task_id}", operations={"get": operation(
        "Server-Sent Events of a task", {"200": _ok("events as id/event/data lines; data is an Event", {},
                                                    "text/event-stream"),
                                         "400": _error("invalid Last-Event-ID"), "404": _error("unknown task"),
                                         "503": _error("this worker holds its stream capacity; "
                                                       "reconnect after Retry-After")},
        path_task=True, query=StreamQuery,
        extra_params=[{"name": "Last-Event-ID", "in": "header", "required": False,
                       "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"}}])})
    entry_param = [{"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 100}}]
    spec.path("/dead-letter", operations={"get": operation(
        "Tasks failed for good and webhook deliveries out of retries (an admin key sees every key's)",
        {"200": _ok("a page of entries", {
            "type": "object", "required": ["entries", "next_cursor"],
            "properties": {"entries": {"type": "array", "items": DEAD_LETTER},
                           "next_cursor": {"type": ["string", "null"]}}}),
         "400": _error("invalid filter")}, query=ListDeadLettersInput)})
    spec.path("/dead-letter/{entry_id}", operations={
        "get": operation("One entry", {"200": _ok("entry", DEAD_LETTER), "404": _error("unknown entry")},
                         extra_params=entry_param),
        "delete": operation("Dismiss an entry", {"204": {"description": "dismissed"},
                                                  "404": _error("unknown entry")}, extra_params=entry_param)})
    spec.path("/dead-letter/{entry_id}/retry", operations={"post": operation(
        "Run it again: a task resumes from its checkpoints, a delivery is sent again",
        {"202": _ok("retrying", OBJECT), "404": _error("unknown entry"), "409": _error("cannot be retried"),
         "400": _error("malformed body"), "415": _error("body is not JSON")}, extra_params=entry_param)})
    spec.path("/ui", operations={"get": operation(
        "The research console: redirects to /ui/", {"308": {"description": "to /ui/"}}, security=public)})
    spec.path("/ui/", operations={"get": operation(
        "The research console (a single page; its API calls carry the key)",
        {"200": _ok("the console's HTML page", {"type": "string"}, "text/html")}, security=public)})
    spec.path("/ui/{name}", operations={"get": operation(
        "The console's static files (scripts, stylesheet, vendored libraries)",
        {"200": _ok("the file", {"type": "string"}, "text/javascript"), "404": _error("no such file")},
        security=public, extra_params=[{"name": "name", "in": "path", "required": True,
                                        "schema": {"type": "string", "maxLength": 200}}])})
    spec.path("/openapi.json", operations={"get": operation("This document", {"200": _ok("OpenAPI 3", OBJECT)})})
    spec.path("/metrics", operations={"get": operation(
        "Prometheus metrics of all workers (no key needed from loopback)",
        {"200": _ok("Prometheus text format", {"type": "string"}, "text/plain")}, security=[{}, *secured])})
    rpc_body = {"required": True, "content": {"application/json": {"schema": {
        "description": "a JSON-RPC 2.0 message or batch", "type": ["object", "array"]}}}}
    mcp_post = operation("MCP Streamable HTTP: one JSON-RPC message (or a batch in 2025-03-26 and older)", {
        "200": _ok("the JSON-RPC response", {"type": ["object", "array"]}),
        "202": {"description": "notifications only: no body"},
        "400": _ok("unparseable JSON, bad MCP-Protocol-Version, a batch where not allowed, or JSON-RPC "
                   "errors for invalid messages", {"type": ["object", "array"]}),
        "403": _error("Origin not allowed"), "404": _ok("session of another key", OBJECT),
        "421": _error("Host not allowed"), "413": _error("body too large")})
    mcp_post["requestBody"] = rpc_body
    mcp_post["parameters"] = [{"name": "Mcp-Session-Id", "in": "header", "required": False,
                               "schema": {"type": "string", "maxLength": 200}}]
    spec.path("/mcp", operations={
        "post": mcp_post,
        "get": operation("No server-initiated stream: always 405", {"405": _error("use POST")}),
        "delete": operation("End an MCP session", {"204": {"description": "ended"},
                                                   "400": _ok("missing Mcp-Session-Id", OBJECT)}),
    })
    spec.path("/", operations={"post": {**mcp_post, "summary": "MCP Streamable HTTP (same as POST /mcp)"}})
    spec.path("/sse", operations={"get": operation(
        "Legacy MCP HTTP+SSE stream: an `endpoint` event, then JSON-RPC messages",
        {"200": _ok("text/event-stream", {}, "text/event-stream"), "403": _error("Origin not allowed"),
         "421": _error("Host not allowed")})})
    spec.path("/messages", operations={"post": {
        **operation("Legacy MCP HTTP+SSE: post a JSON-RPC message; the reply comes over the stream", {
            "202": {"description": "accepted"}, "400": _error("missing session_id"),
            "404": _error("unknown session"), "403": _error("Origin not allowed"),
            "421": _error("Host not allowed")},
            extra_params=[{"name": "session_id", "in": "query", "required": True, "schema": {"type": "string"}}]),
        "requestBody": rpc_body}})
    oauth_paths(spec, operation, public)
    return spec.to_dict()


OAUTH_ERROR = {"type": "object", "required": ["error"],
               "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}}
FORM = "application/x-www-form-urlencoded"


def _oauth_error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"anyOf": [OAUTH_ERROR, ERROR]}}}}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"required": True, "content": {FORM: {"schema": {"type": "object", "properties": properties,
                                                            "required": required}}}}


def oauth_paths(spec: APISpec, operation: Any, public: list[dict[str, Any]]) -> None:
    """DESIGN §13's OAuth routes: 404 unless OAUTH_ISSUER or OAUTH_BUILTIN=1 turns them on
    (the authorization server's, /oauth/* and its metadata, only with OAUTH_BUILTIN=1)."""
    off = _error("OAuth (or the built-in server) is not configured")
    text = {"type": "string"}
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        spec.path(path, operations={"get": operation(
            "RFC 9728 protected resource metadata: the resource, its authorization server, scopes",
            {"200": _ok("metadata", {"type": "object", "required": ["resource", "authorization_servers"],
                                     "properties": {"resource": text, "authorization_servers": {
                                         "type": "array", "items": text}}}), "404": off}, security=public)})
    spec.path("/.well-known/oauth-authorization-server", operations={"get": operation(
        "RFC 8414 metadata of the built-in authorization server",
        {"200": _ok("metadata", {"type": "object", "required": ["issuer", "token_endpoint"]}), "404": off},
        security=public)})
    spec.path("/oauth/jwks.json", operations={"get": operation(
        "The built-in server's public signing keys (JWKS)",
        {"200": _ok("JWKS", {"type": "object", "required": ["keys"]}), "404": off}, security=public)})
    authorize_params = [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in (
        "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method",
        "resource")]
    spec.path("/oauth/authorize", operations={
        "get": operation("The consent page: the operator approves the client with an API key", {
            "200": _ok("an HTML form", text, "text/html"),
            "302": {"description": "back to the client's redirect URI with an error"},
            "400": _oauth_error("unknown client, unregistered redirect URI, or bad request"), "404": off},
            security=public, extra_params=authorize_params),
        "post": {**operation("The operator's decision (CSRF-checked): a redirect with the code", {
            "302": {"description": "back to the client's redirect URI with code and state, or an error"},
            "400": _oauth_error("bad request"), "403": _oauth_error("no valid CSRF token or API key"),
            "404": off}, security=public, extra_params=authorize_params),
            "requestBody": _form({"csrf": text, "api_key": text, "decision": {"enum": ["approve", "deny"]}},
                                 ["csrf", "decision"])}})
    spec.path("/oauth/token", operations={"post": {**operation(
        "Token endpoint: authorization_code (with PKCE code_verifier) or refresh_token (rotated)", {
            "200": _ok("tokens", {"type": "object", "required": ["access_token", "token_type"]}),
            "400": _oauth_error("invalid_request, invalid_grant, unsupported_grant_type, invalid_target"),
            "401": _oauth_error("invalid_client"), "404": off, "429": _error("rate limited")}, security=public),
        "requestBody": _form({"grant_type": text, "code": text, "redirect_uri": text, "client_id": text,
                              "code_verifier": text, "refresh_token": text, "resource": text}, ["grant_type"])}})
    spec.path("/oauth/register", operations={"post": {**operation(
        "RFC 7591 dynamic client registration (open; the operator approves each client at consent)", {
            "201": _ok("the client's registration", {"type": "object", "required": ["client_id"]}),
            "400": _oauth_error("invalid_client_metadata or not a JSON object"),
            "413": _error("body too large"), "415": _error("body is not JSON"), "404": off,
            "429": _error("rate limited")}, security=public),
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["redirect_uris"],
            "properties": {"redirect_uris": {"type": "array", "items": text}, "client_name": text,
                           "token_endpoint_auth_method": text}}}}}}})
    spec.path("/oauth/revoke", operations={"post": {**operation(
        "RFC 7009 revocation of a refresh token", {
            "200": {"description": "revoked (or unknown: the same answer)"},
            "400": _oauth_error("invalid_request"), "401": _oauth_error("invalid_client"), "404": off},
        security=public),
        "requestBody": _form({"token": text, "token_type_hint": text, "client_id": text}, ["token"])}})


@bp.get("/openapi.json")
def openapi():
    return jsonify(build_spec())
