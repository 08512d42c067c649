"""MCP Streamable HTTP transport (DESIGN §5) at POST/GET/DELETE /mcp and POST /.

A thin adapter: it checks Origin/Host and the protocol version header, loads the session
from the store (so any worker serves any session, and an unknown but authenticated session
is rebuilt), hands the JSON-RPC payload to the dispatcher, and answers with JSON, or with
an SSE stream when a call asks for progress."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, request, stream_with_context

from .. import jsonio
from ..errors import NotFound, error_response
from ..protocol import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    META_VERSION,
    PROTOCOL_VERSIONS,
    SESSION_TTL,
    STATELESS_VERSION,
    CallContext,
    McpServer,
    RpcError,
    is_request,
    new_session_id,
    parse_payload,
    rpc_error,
)
from ..services import Services, services
from . import owner, public_prefix, urls_under

bp = Blueprint("mcp_http", __name__)
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# A session unchanged by a request is written back (sliding its expiry) at most this often.
SESSION_REFRESH = SESSION_TTL / 24
# Methods that read or change session state another worker may have just changed (the
# request-id -> task map a cancel looks up, the log level): they always read the stored
# session. Other requests may use this worker's copy of the last few seconds.
FRESH_METHODS = frozenset({"initialize", "notifications/cancelled", "logging/setLevel"})
SESSION_CACHE_SECONDS = 5.0


class SessionCache:
    """This worker's recent copies of sessions, as the JSON last read or written.

    design: every MCP request used to read its session from the store; for most methods
    only the owner and protocol version matter, and those never change after initialize."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str) -> str | None:
        with self._lock:
            item = self._items.get(session_id)
            if item is None or time.monotonic() - item[0] > SESSION_CACHE_SECONDS:
                return None
            return item[1]

    def put(self, session_id: str, text: str) -> None:
        with self._lock:
            self._items[session_id] = (time.monotonic(), text)
            self._items.move_to_end(session_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._items.pop(session_id, None)


def session_cache(svc: Services) -> SessionCache:
    cache = svc.caches.get("sessions")
    return cache if cache is not None else svc.caches.setdefault("sessions", SessionCache())

# Versions whose transport still allows JSON-RPC batches.
BATCH_VERSIONS = ("2024-11-05", "2025-03-26")


def origin_and_host_errors(svc: Services) -> Response | None:
    """DNS-rebinding protection: a foreign Origin is 403; on a loopback bind a foreign Host is 421."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = urlsplit(origin).hostname or ""
        if origin not in svc.settings.allowed_origins and host not in LOOPBACK_HOSTS:
            return error_response(403, "forbidden", f"origin {origin} is not allowed")
    elif origin == "null":
        return error_response(403, "forbidden", "origin null is not allowed")
    if svc.settings.is_loopback_bind:
        host = (urlsplit(f"//{request.host}").hostname or "").lower()
        if host not in LOOPBACK_HOSTS and host not in svc.settings.allowed_hosts:
            return error_response(421, "misdirected_request", f"host {request.host} is not served here")
    return None


@bp.before_request
def dns_rebinding_guard() -> Response | None:
    """Every MCP route refuses a foreign Origin or Host before anything else happens."""
    return origin_and_host_errors(services())


def rpc_response(body: Any, status: int = 200, session_id: str | None = None) -> Response:
    response = Response(jsonio.dumpb(body), status=status, mimetype="application/json")
    if session_id:
        response.headers[SESSION_HEADER] = session_id
    return response


@bp.post("/mcp")
@bp.post("/")
def post() -> Response:
    svc = services()
    header_version = request.headers.get(VERSION_HEADER)
    if header_version and header_version not in (*PROTOCOL_VERSIONS, STATELESS_VERSION):
        return rpc_response(rpc_error(None, INVALID_REQUEST, f"unsupported {VERSION_HEADER}: {header_version}",
                                      {"supported": list(PROTOCOL_VERSIONS)}), 400)
    try:
        payload = parse_payload(request.get_data(cache=False))
    except RpcError as exc:
        return rpc_response(rpc_error(None, exc.code, exc.message, exc.data), 400)

    caller = owner()
    messages = payload if isinstance(payload, list) else [payload]
    session_id, session, stored, cached = load_session(svc, messages, caller, header_version)
    if session is None:
        return rpc_response(rpc_error(None, INVALID_REQUEST, "session not found"), 404)
    version = session.get("protocol_version") or header_version or "2025-03-26"
    if isinstance(payload, list) and version not in BATCH_VERSIONS:
        return rpc_response(rpc_error(None, INVALID_REQUEST, f"batches are not supported in protocol {version}"),
                            400, session_id)

    def save() -> None:
        """Write the session when it changed, or to slide its expiry once in a while: most
        calls change nothing, and a store write per MCP request halved throughput."""
        nonlocal stored
        if not session_id:
            return
        now = time.time()
        unchanged = stored == jsonio.dumps(session, sort_keys=True)
        if unchanged and now - session.get("seen", 0) < SESSION_REFRESH:
            return
        target = session
        if unchanged and cached:
            # design: only the expiry slides; a copy up to five seconds old must not write
            # over what another worker stored meanwhile, so slide the stored session itself.
            target = svc.store.get_session(session_id) or session
        target["seen"] = now
        svc.store.save_session(session_id, target, SESSION_TTL)
        stored = jsonio.dumps(target, sort_keys=True)
        session_cache(svc).put(session_id, stored)

    ctx = CallContext(owner=caller, urls=urls_under(public_prefix(svc.settings)), session=session,
                      save_session=save)
    if not isinstance(payload, (dict, list)) or payload == []:
        return rpc_response(rpc_error(None, INVALID_REQUEST, "expected a JSON-RPC message object or a batch"), 400,
                            session_id)
    svc.limits.hit_orchestrate(sum(1 for m in messages if starts_task(svc, m)))
    if not any(is_request(m) for m in messages):
        errors = svc.mcp.handle_payload(payload, ctx)
        save()
        # notifications and responses get 202 and no body; a malformed one gets its error
        return rpc_response(errors, 400, session_id) if errors else Response(status=202)
    if wants_progress(messages) and "text/event-stream" in request.headers.get("Accept", ""):
        return sse_call(svc.mcp, payload, ctx, session_id, svc.settings.stream_keepalive)
    body = svc.mcp.handle_payload(payload, ctx)
    save()
    return rpc_response(body, 200, session_id)


def load_session(svc: Services, messages: list[Any], caller: str,
                 header_version: str | None) -> tuple[str | None, dict[str, Any] | None, str | None, bool]:
    """(session id, session, its JSON as stored or None when not stored, whether that came
    from this worker's copy rather than the store) for this request.
    `initialize` opens a new session; a known id is loaded; an unknown id is rebuilt for this
    caller, because clients such as Claude Code never re-initialize; a request in the
    stateless 2026-07-28 style has no session."""
    if any(isinstance(m, dict) and m.get("method") == "initialize" for m in messages):
        return new_session_id(), {"owner": caller}, None, False
    stateless = any(isinstance(m, dict) and isinstance(m.get("params"), dict)
                    and isinstance(m["params"].get("_meta"), dict)
                    and m["params"]["_meta"].get(META_VERSION) == STATELESS_VERSION for m in messages)
    session_id = request.headers.get(SESSION_HEADER)
    if stateless or not session_id:
        return None, {"owner": caller}, None, False
    if len(session_id) > 200 or not session_id.isprintable():
        return None, None, None, False
    fresh = any(needs_stored_session(svc, m) for m in messages)
    stored = None if fresh else session_cache(svc).get(session_id)
    session = json.loads(stored) if stored else svc.store.get_session(session_id)
    if session is None:
        return session_id, {"owner": caller, "protocol_version": header_version, "rebuilt": True}, None, False
    if session.get("owner") != caller:
        return None, None, None, False  # design: a session belongs to the key that opened it
    cached = stored is not None
    if not cached:
        stored = jsonio.dumps(session, sort_keys=True)
        session_cache(svc).put(session_id, stored)
    return session_id, session, stored, cached


def needs_stored_session(svc: Services, message: Any) -> bool:
    """Whether handling `message` reads or changes session state another worker may have
    just changed, so this worker's copy will not do."""
    method = message.get("method") if isinstance(message, dict) else None
    return (isinstance(method, str) and method in FRESH_METHODS) or starts_task(svc, message)


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


def sse_call(server: McpServer, payload: Any, ctx: CallContext, session_id: str | None,
             keepalive: float) -> Response:
    """Answer one POST as an SSE stream: progress notifications as they happen, then the response."""
    outbox: queue.Queue = queue.Queue()
    ctx.notify = outbox.put
    done = object()

    def work() -> None:
        try:
            reply = server.handle_payload(payload, ctx)
        except Exception:  # noqa: BLE001 - handle_payload maps errors; this is a last resort
            reply = rpc_error(None, INTERNAL_ERROR, "internal error")
        ctx.save_session()
        outbox.put((done, reply))

    def stream() -> Iterator[str]:
        threading.Thread(target=work, name="mcp-call", daemon=True).start()
        while True:
            try:
                item = outbox.get(timeout=keepalive)
            except queue.Empty:
                yield ": keep-alive\n\n"
                continue
            if isinstance(item, tuple) and item and item[0] is done:
                for message in item[1] if isinstance(item[1], list) else [item[1]]:
                    yield f"event: message\ndata: {jsonio.dumps(message)}\n\n"
                return
            yield f"event: message\ndata: {jsonio.dumps(item)}\n\n"

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
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
    if session is not None and session.get("owner") == owner():
        svc.store.delete_session(session_id)
        session_cache(svc).drop(session_id)
    return Response(status=204)
