"""MCP Streamable HTTP transport (DESIGN §5) at POST/GET/DELETE /mcp and POST /.

A thin adapter: it checks Origin/Host and the protocol version header, loads the session
from the store (so any worker serves any session; an unknown or deleted one is answered
404 so the client initializes again), hands the JSON-RPC payload to the dispatcher, and
answers with JSON, or with an SSE stream when a call asks for progress or log messages."""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from .. import jsonio
from ..errors import NotFound, error_response
from ..protocol import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PROTOCOL_VERSIONS,
    CallContext,
    CallLedger,
    RpcError,
    StoreCallLedger,
    is_request,
    new_session_id,
    parse_payload,
    rpc_error,
    unsupported_version,
)
from ..security import require_scopes
from ..services import Services, services
from . import owner, public_prefix, urls_under
from .streams import sse_response

bp = Blueprint("mcp_http", __name__)
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# A session unchanged by a request is written back (sliding its expiry) at most once in this
# share of SESSION_TTL.
SESSION_REFRESH_SHARE = 1 / 24

# Versions whose transport still allows JSON-RPC batches.
BATCH_VERSIONS = ("2024-11-05", "2025-03-26")


@functools.lru_cache(maxsize=1024)
def hostname(url: str) -> str:
    """The host name of a URL (`//host:port` for a Host header), lower case; kept, as the
    Origin and Host values a service sees are few."""
    return (urlsplit(url).hostname or "").lower()


def origin_and_host_errors(svc: Services) -> Response | None:
    """DNS-rebinding protection: a foreign Origin is 403; on a loopback bind a foreign Host is 421."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = hostname(origin)
        if origin not in svc.settings.allowed_origins and host not in LOOPBACK_HOSTS:
            return error_response(403, "forbidden", f"origin {origin} is not allowed")
    elif origin == "null":
        return error_response(403, "forbidden", "origin null is not allowed")
    if svc.settings.is_loopback_bind:
        host = hostname(f"//{request.host}")
        if host not in LOOPBACK_HOSTS and host not in svc.settings.allowed_hosts:
            return error_response(421, "misdirected_request", f"host {request.host} is not served here")
    return None


@bp.before_request
def dns_rebinding_guard() -> Response | None:
    """Every MCP route refuses a foreign Origin or Host before anything else happens."""
    return origin_and_host_errors(services())


def rpc_response(body: Any, status: int = 200, session_id: str | None = None) -> Response:
    response = Response(jsonio.dumpb(body), status, content_type="application/json")
    if session_id:
        response.headers.add(SESSION_HEADER, session_id)  # a new response: nothing to replace
    return response


@bp.post("/mcp")
@bp.post("/")
def post() -> Response:
    svc = services()
    header_version = request.headers.get(VERSION_HEADER)
    if header_version and header_version not in PROTOCOL_VERSIONS:
        # design: the SDK's default mode probes 2026-07-28 first; this answer (-32022 with
        # the versions we speak) makes it fall back to initialize.
        return rpc_response(unsupported_version(header_version), 400)
    try:
        payload = parse_payload(request.get_data(cache=False))
    except RpcError as exc:
        return rpc_response(rpc_error(None, exc.code, exc.message, exc.data), 400)

    caller = owner()
    messages = payload if isinstance(payload, list) else [payload]
    session_id, session, stored = load_session(svc, messages, caller)
    if session is None:
        return rpc_response(rpc_error(None, INVALID_REQUEST, "session not found: initialize a new one"), 404)
    version = session.get("protocol_version") or header_version or "2025-03-26"
    if isinstance(payload, list) and version not in BATCH_VERSIONS:
        return rpc_response(rpc_error(None, INVALID_REQUEST, f"batches are not supported in protocol {version}"),
                            400, session_id)

    def save() -> None:
        """Write the session when it changed, or to slide its expiry once in a while: most
        calls change nothing, and a store write per MCP request halved throughput. Only
        initialize creates it: a call ending after DELETE must not bring it back."""
        nonlocal stored
        if not session_id:
            return
        now = time.time()
        ttl = svc.settings.session_ttl_seconds
        if stored == session and now - session.get("seen", 0) < ttl * SESSION_REFRESH_SHARE:
            return
        session["seen"] = now
        svc.store.save_session(session_id, session, ttl, create=stored is None)
        stored = dict(session)

    calls = StoreCallLedger(svc.store, session_id, svc.settings.session_ttl_seconds) if session_id else CallLedger()
    ctx = CallContext(owner=caller, urls=urls_under(public_prefix(svc.settings)), session=session,
                      save_session=save, calls=calls)
    if not isinstance(payload, (dict, list)) or payload == []:
        return rpc_response(rpc_error(None, INVALID_REQUEST, "expected a JSON-RPC message object or a batch"), 400,
                            session_id)
    require_scopes(svc.settings, *{required_scope(svc, m) for m in messages})
    svc.limits.hit_orchestrate(sum(1 for m in messages if starts_task(svc, m)))
    if not any(is_request(m) for m in messages):
        errors = svc.mcp.handle_payload(payload, ctx)
        save()
        # notifications and responses get 202 and no body; a malformed one gets its error
        return rpc_response(errors, 400, session_id) if errors else Response(status=202)
    if "text/event-stream" in request.headers.get("Accept", "") and (
            wants_progress(messages) or (session.get("log_level") and any(starts_task(svc, m) for m in messages))):
        return sse_call(svc, payload, ctx, session_id)
    body = svc.mcp.handle_payload(payload, ctx)
    save()
    if body is None:
        # the client cancelled its request: it gets no response, only a stream that ends
        return sse_headers(Response("", mimetype="text/event-stream"), session_id)
    return rpc_response(body, 200, session_id)


def load_session(svc: Services, messages: list[Any],
                 caller: str) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(session id, session or None when this request must get 404, a copy of it as stored
    or None for a new one; handlers only set top-level keys, so a shallow copy tells a
    changed session). `initialize` opens a new session; a request without a session id
    is served without one; a known id of this caller is loaded from the store (so any
    worker serves it, and it outlives a worker); an unknown, expired or deleted id is 404
    (the specification's MUST, so the client initializes again)."""
    if any(isinstance(m, dict) and m.get("method") == "initialize" for m in messages):
        return new_session_id(), {"owner": caller}, None
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        return None, {"owner": caller}, None
    if len(session_id) > 200 or not session_id.isprintable():
        return None, None, None
    session = svc.store.get_session(session_id)
    if session is None or session.get("owner") != caller:
        return None, None, None  # design: a session belongs to the key that opened it
    return session_id, session, dict(session)


def required_scope(svc: Services, message: Any) -> str:
    """The OAuth scope a message needs: `orchestrate` to start or cancel a task, else `read`."""
    if is_request(message) and message.get("method") == "tasks/cancel":
        return "orchestrate"
    if is_request(message) and message.get("method") == "tools/call" and isinstance(message.get("params"), dict):
        try:
            return svc.tools.get(str(message["params"].get("name"))).scope
        except NotFound:
            return "read"
    return "read"


def starts_task(svc: Services, message: Any) -> bool:
    """A tools/call of a tool that starts a task: counted against RATE_LIMIT_ORCHESTRATE."""
    if not (is_request(message) and message.get("method") == "tools/call" and isinstance(message.get("params"), dict)):
        return False
    try:
        return svc.tools.get(str(message["params"].get("name"))).starts_task
    except NotFound:
        return False


def wants_progress(messages: list[Any]) -> bool:
    for m in messages:
        if is_request(m) and isinstance(m.get("params"), dict):
            meta = m["params"].get("_meta")
            if isinstance(meta, dict) and meta.get("progressToken") is not None:
                return True
    return False


def sse_call(svc: Services, payload: Any, ctx: CallContext, session_id: str | None) -> Response:
    """Answer one POST as an SSE stream: progress notifications as they happen, then the
    response. It holds a request thread like any stream, so it takes a stream slot."""
    server, keepalive = svc.mcp, svc.settings.stream_keepalive
    outbox: queue.Queue = queue.Queue()
    ctx.notify = outbox.put
    done = object()

    def work() -> None:
        try:
            reply = server.handle_payload(payload, ctx)
        except Exception:  # noqa: BLE001 - handle_payload maps errors; this is a last resort
            reply = rpc_error(None, INTERNAL_ERROR, "internal error")
        ctx.save_session()
        outbox.put((done, reply))  # None when the client cancelled: the stream ends without a response

    def stream() -> Iterator[str]:
        threading.Thread(target=work, name="mcp-call", daemon=True).start()
        while True:
            try:
                item = outbox.get(timeout=keepalive)
            except queue.Empty:
                yield ": keep-alive\n\n"
                continue
            if isinstance(item, tuple) and item and item[0] is done:
                for message in item[1] if isinstance(item[1], list) else [item[1]] if item[1] else []:
                    yield f"event: message\ndata: {jsonio.dumps(message)}\n\n"
                return
            yield f"event: message\ndata: {jsonio.dumps(item)}\n\n"

    return sse_response(svc, stream, headers={SESSION_HEADER: session_id} if session_id else None)


def sse_headers(response: Response, session_id: str | None) -> Response:
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    if session_id:
        response.headers[SESSION_HEADER] = session_id
    return response


@bp.get("/mcp")
def get() -> Response:
    return error_response(405, "method_not_allowed", "this server offers no server-initiated stream; POST requests",
                          headers={"Allow": "POST, DELETE"})


@bp.delete("/mcp")
def delete() -> Response:
    svc = services()
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        return rpc_response(rpc_error(None, INVALID_REQUEST, f"missing {SESSION_HEADER}"), 400)
    session = svc.store.get_session(session_id)
    if session is None or session.get("owner") != owner():
        return rpc_response(rpc_error(None, INVALID_REQUEST, "session not found"), 404)
    svc.store.delete_session(session_id)
    return Response(status=204)
