"""Legacy MCP HTTP+SSE transport (protocol 2024-11-05) at GET /sse + POST /messages.

The client holds a stream on one worker and posts messages that may land on any other.
The posting worker handles the message and puts the reply into the store's session
outbox; the worker holding the stream reads the outbox and writes it to the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Response, request, stream_with_context

from .. import jsonio
from ..errors import NotFound, ValidationError
from ..protocol import SESSION_TTL, CallContext, RpcError, new_session_id, parse_payload, rpc_error
from ..services import Services, services
from . import owner, public_prefix, urls_under
from .mcp_http import dns_rebinding_guard

bp = Blueprint("legacy_sse", __name__)
bp.before_request(dns_rebinding_guard)
POLL_INTERVAL = 0.1


@bp.get("/sse")
def open_stream() -> Response:
    svc = services()
    session_id = new_session_id()
    svc.store.save_session(session_id, {"owner": owner(), "protocol_version": "2024-11-05", "legacy": True},
                           SESSION_TTL)
    endpoint = f"{public_prefix(svc.settings)}/messages?session_id={session_id}"
    response = Response(stream_with_context(relay(svc, session_id, endpoint)), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def relay(svc: Services, session_id: str, endpoint: str) -> Iterator[str]:
    yield f"event: endpoint\ndata: {endpoint}\n\n"
    last, quiet_since = 0, time.monotonic()
    svc.hub.stream_opened()
    try:
        while not svc.hub.stopping:
            messages = svc.store.session_messages(session_id, last)
            for message_id, message in messages:
                yield f"event: message\ndata: {jsonio.dumps(message)}\n\n"
                last = message_id
            if messages:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= svc.settings.stream_keepalive:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            time.sleep(POLL_INTERVAL)
    finally:
        svc.hub.stream_closed()
        svc.store.delete_session(session_id)


@bp.post("/messages")
def post_message() -> Response:
    svc = services()
    session_id = request.args.get("session_id", "")
    if not session_id:
        raise ValidationError("session_id is required", {"fields": {"session_id": ["missing"]}})
    session = svc.store.get_session(session_id)
    if session is None or session.get("owner") != owner():
        raise NotFound(f"session {session_id!r} not found")
    try:
        payload = parse_payload(request.get_data())
    except RpcError as exc:
        svc.store.push_session_message(session_id, rpc_error(None, exc.code, exc.message, exc.data))
        return Response(status=202)

    def deliver(message: dict) -> None:
        svc.store.push_session_message(session_id, message)

    ctx = CallContext(owner=session["owner"], urls=urls_under(public_prefix(svc.settings)), session=session,
                      notify=deliver,
                      save_session=lambda: svc.store.save_session(session_id, session, SESSION_TTL))

    def work() -> None:
        reply = svc.mcp.handle_payload(payload, ctx)
        ctx.save_session()
        for message in reply if isinstance(reply, list) else ([reply] if reply else []):
            deliver(message)

    # design: a tool call may wait minutes; the POST is acknowledged at once and the
    # reply travels over the client's stream.
    threading.Thread(target=work, name="mcp-legacy-call", daemon=True).start()
    return Response(status=202)
