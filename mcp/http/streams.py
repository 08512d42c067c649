"""Server-Sent Events for one task (DESIGN §8): replay from Last-Event-ID, then live events
until the terminal one, with keep-alive comments. Served by any worker: events come from
the store, and the stream hub wakes this thread when a new one lands."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from flask import Blueprint, Response, request, stream_with_context

from orchestration.models import TERMINAL_EVENTS

from .. import jsonio
from ..errors import Unavailable, ValidationError
from ..schemas import StreamQuery
from ..services import Services, services
from ..store import Event
from . import load_query, owner

bp = Blueprint("streams", __name__)
RETRY_MS = 3000
# Seconds a refused stream is told to wait: long enough for a slot to free up or for the
# next connection to land on another worker, short enough for a dashboard to feel live.
REFUSED_RETRY_AFTER = 2


_encoded: OrderedDict[tuple[str, int], str] = OrderedDict()
_encoded_lock = threading.Lock()
ENCODED_CACHE = 4096


def sse_event(event: Event) -> str:
    """The SSE frame of an event. An event never changes once written, and every reader of a
    task on this worker sends the same frames, so each is encoded once, not once per reader."""
    key = (event.task_id, event.id)
    with _encoded_lock:
        frame = _encoded.get(key)
    if frame is None:
        frame = f"id: {event.id}\nevent: {event.event_type}\ndata: {jsonio.dumps(event.to_dict())}\n\n"
        with _encoded_lock:
            _encoded[key] = frame
            if len(_encoded) > ENCODED_CACHE:
                _encoded.popitem(last=False)
    return frame


def resume_point() -> int:
    """Where a reconnecting client left off: `Last-Event-ID`, else `?last_event_id=`, else 0."""
    from_query = load_query(StreamQuery)["last_event_id"]
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        if not header.strip().isdigit() or len(header.strip()) > 15:
            raise ValidationError("Last-Event-ID must be an event id",
                                  {"fields": {"Last-Event-ID": ["not a non-negative integer"]}})
        return int(header.strip())
    return from_query or 0


def sse_response(svc: Services, make_stream: Callable[[], Iterator[str]],
                 headers: dict[str, str] | None = None) -> Response:
    """The response of every SSE stream this service serves (task streams, legacy MCP, MCP
    calls with progress): it takes one of this worker's stream slots first, or answers 503
    with Retry-After, so streams can never take the threads other requests need. The slot
    is given back when the server closes the response, however the stream ended.

    `make_stream` is called only once the slot is taken: work that only makes sense with a
    stream to watch it (starting a task for `"stream": true`) belongs in it."""
    hub = svc.hub
    if not hub.admit():
        raise Unavailable(f"this worker holds its {hub.capacity} streams; retry shortly",
                          {"streams": {"open": hub.active_streams, "capacity": hub.capacity}},
                          headers={"Retry-After": str(REFUSED_RETRY_AFTER)})
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            hub.stream_closed()

    try:
        response = Response(stream_with_context(make_stream()), mimetype="text/event-stream")
    except BaseException:
        release()
        raise
    response.call_on_close(release)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def event_stream(svc: Services, task_id: str, after: int) -> Iterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    svc.hub.join(task_id)
    try:
        yield from follow(svc, task_id, after)
    finally:
        svc.hub.leave(task_id)


def follow(svc: Services, task_id: str, after: int) -> Iterator[str]:
    """The task's events after `after` as SSE frames, live, until its terminal event."""
    last = after
    while True:
        events = svc.hub.events_after(task_id, last)
        for event in events:
            yield sse_event(event)
            last = event.id
            if event.event_type in TERMINAL_EVENTS:
                return
        if events:
            continue
        if svc.hub.stopping:
            # design: the worker is going away; tell the client to come back (to another one).
            yield f"retry: 1000\nevent: reconnect\ndata: {json.dumps({'last_event_id': last})}\n\n"
            return
        if not svc.hub.wait(task_id, last, svc.settings.stream_keepalive):
            if svc.hub.stopping:
                continue
            yield ": keep-alive\n\n"


@bp.get("/stream/<task_id>")
def stream(task_id: str):
    svc = services()
    svc.tasks.get(task_id, owner())
    after = resume_point()
    return sse_response(svc, lambda: event_stream(svc, task_id, after))
