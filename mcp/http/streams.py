"""Server-Sent Events for one task (DESIGN §8): replay from Last-Event-ID, then live events
until the terminal one, with keep-alive comments. Served by any worker: events come from
the store, and the stream hub wakes this thread when a new one lands."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, request, stream_with_context

from orchestration.models import TERMINAL_EVENTS

from ..errors import Unavailable, ValidationError
from ..fanout import reconnect_frame, take_socket
from ..schemas import StreamQuery
from ..services import Services, services
from ..streaming import sse_event
from . import load_query, owner

bp = Blueprint("streams", __name__)
RETRY_MS = 3000
# Seconds a refused stream is told to wait: long enough for a slot to free up or for the
# next connection to land on another worker, short enough for a dashboard to feel live.
REFUSED_RETRY_AFTER = 2


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


class HandOff:
    """The way out of a request thread for a task stream that has caught up: its connection
    goes to the worker's fan-out thread (mcp/fanout.py). Only under gunicorn, on a plain
    socket, once the hub allows it (`enable_handoff`); never for HEAD (no body)."""

    def __init__(self, svc: Services, environ: dict[str, Any]):
        self.svc = svc
        self.sock = environ.get("gunicorn.socket")
        self.gunicorn_request = environ.get("mcp.gunicorn_request")
        protocol = environ.get("SERVER_PROTOCOL")
        # gunicorn frames a body of unknown length in chunks for HTTP/1.1, raw for HTTP/1.0
        self.chunked = protocol == "HTTP/1.1"
        self.possible = (svc.hub.handoff and self.sock is not None and environ.get("REQUEST_METHOD") in ("GET", "POST")
                         and protocol in ("HTTP/1.0", "HTTP/1.1"))
        self.done = False

    def admitted(self) -> None:
        """The stream has its slots: its connection will end with it, never go back to
        gunicorn for another request, so the headers say `Connection: close`."""
        if self.possible and self.gunicorn_request is not None:
            self.gunicorn_request.force_close()

    def __call__(self, task_id: str, last: int) -> bool:
        """Hand the stream over, its client having every event up to `last`; False when it
        stays on this thread."""
        if not self.possible:
            return False
        sock = take_socket(self.sock)
        if sock is None:
            self.possible = False
            return False
        self.done = True
        self.svc.hub.hand_off(sock, task_id, last, self.chunked)
        return True


def sse_response(svc: Services, make_stream: Callable[[], Iterator[str]],
                 headers: dict[str, str] | None = None, hand_off: HandOff | None = None) -> Response:
    """The response of every SSE stream this service serves (task streams, legacy MCP, MCP
    calls with progress): it takes one of this worker's stream slots first, or answers 503
    with Retry-After, so streams can never take the threads other requests need. The slot
    is given back when the server closes the response, however the stream ended.

    `make_stream` is called only once the slot is taken: work that only makes sense with a
    stream to watch it (starting a task for `"stream": true`) belongs in it. A stream that
    `hand_off` takes from this thread gives back only its thread slot here: the fan-out
    thread gives back the rest when the stream ends."""
    hub = svc.hub
    if not hub.admit():
        raise Unavailable(f"this worker holds its {hub.capacity} streams; retry shortly",
                          {"streams": {"open": hub.active_streams, "capacity": hub.capacity}},
                          headers={"Retry-After": str(REFUSED_RETRY_AFTER)})
    if hand_off is not None:
        hand_off.admitted()
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            if hand_off is not None and hand_off.done:
                return  # the thread slot went back at the hand-off; the stream lives on
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


def event_stream(svc: Services, task_id: str, after: int, hand_off: HandOff | None = None) -> Iterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    svc.hub.join(task_id)
    try:
        yield from follow(svc, task_id, after, hand_off)
    finally:
        if hand_off is None or not hand_off.done:
            svc.hub.leave(task_id)  # else the fan-out leaves when the stream ends


def follow(svc: Services, task_id: str, after: int, hand_off: HandOff | None = None) -> Iterator[str]:
    """The task's events after `after` as SSE frames, live, until its terminal event; or
    until `hand_off` takes the stream to the fan-out thread, which replays from `after` as
    well: readers connecting together at the same place (a burst of dashboards opening on
    running tasks) then share one read and one write pass instead of each replaying on its
    own thread."""
    last = after
    if hand_off is not None and not svc.hub.stopping and hand_off(task_id, last):
        return
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
            yield reconnect_frame(last).decode()
            return
        if hand_off is not None and hand_off(task_id, last):
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
    hand_off = HandOff(svc, request.environ)
    return sse_response(svc, lambda: event_stream(svc, task_id, after, hand_off), hand_off=hand_off)
