"""Legacy MCP HTTP+SSE transport (protocol 2024-11-05) at GET /sse + POST /messages.

The client holds a stream on one worker and posts messages that may land on any other.
The posting worker handles the message and puts the reply into the store's session
outbox; the worker holding the stream reads the outbox and writes it to the client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Response, request

from .. import jsonio
from ..errors import NotFound, ValidationError
from ..protocol import CallContext, RpcError, StoreCallLedger, new_session_id, parse_payload, rpc_error
from ..security import require_scopes
from ..services import Services, services
from . import owner, public_prefix, urls_under
from .mcp_http import dns_rebinding_guard, required_scope
from .streams import sse_response

bp = Blueprint("legacy_sse", __name__)
bp.before_request(dns_rebinding_guard)
POLL_INTERVAL = 0.1


@bp.get("/sse")
def open_stream() -> Response:
    svc = services()
    caller, session_id = owner(), new_session_id()
    endpoint = f"{public_prefix(svc.settings)}/messages?session_id={session_id}"

    def opened() -> Iterator[str]:
        # design: the session is stored only once the stream has its slot; a refused
        # stream leaves nothing behind.
        svc.store.save_session(session_id, {"owner": caller, "protocol_version": "2024-11-05", "legacy": True},
                               svc.settings.session_ttl_seconds)
        return relay(svc, session_id, endpoint)

    return sse_response(svc, opened)


def relay(svc: Services, session_id: str, endpoint: str) -> Iterator[str]:
    yield f"event: endpoint\ndata: {endpoint}\n\n"
    last, quiet_since = 0, time.monotonic()
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
    messages = payload if isinstance(payload, list) else [payload]
    require_scopes(svc.settings, *{required_scope(svc, m) for m in messages})

    def deliver(message: dict) -> None:
        svc.store.push_session_message(session_id, message)

    ctx = CallContext(owner=session["owner"], urls=urls_under(public_prefix(svc.settings)), session=session,
                      notify=deliver,
                      save_session=lambda: svc.store.save_session(session_id, session, svc.settings.session_ttl_seconds,
                                                                   create=False),
                      calls=StoreCallLedger(svc.store, session_id, svc.settings.session_ttl_seconds))

    def work() -> None:
        reply = svc.mcp.handle_payload(payload, ctx)
        ctx.save_session()
        for message in reply if isinstance(reply, list) else ([reply] if reply else []):
            deliver(message)

    # design: a tool call may wait minutes; the POST is acknowledged at once and the
    # reply travels over the client's stream.
    threading.Thread(target=work, name="mcp-legacy-call", daemon=True).start()
    return Response(status=202)
