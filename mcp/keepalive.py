"""Keep-alive stays honest when a response goes out before its request body was read.

A 413 (or a 401, 415, ... answered without reading the body) leaves the body on the
socket. Gunicorn drains at most 64 KiB of it before reusing the connection and otherwise
closes it, after having announced `Connection: keep-alive`: the client's next request on
that connection then fails with "server disconnected". Here, before the response's
headers go out, what is left of the body is drained within a bound; when that does not
reach its end, gunicorn is told to answer `Connection: close` and close.

Gunicorn ignores a `Connection` header set by the application, so the request is handed
over by gunicorn's `pre_request` hook (`bind_request`), on the thread that serves it."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from flask import Flask

# design: a body up to this size is read to its end (a loopback or LAN client sends that
# in milliseconds), which keeps the connection; beyond it, or past the time bound, the
# connection is closed instead: draining a large refused body would cost the very bytes
# the refusal was meant to spare.
DRAIN_MAX_BYTES = 256 * 1024
DRAIN_MAX_SECONDS = 1.0
CHUNK = 64 * 1024

_current = threading.local()


def bind_request(req: Any) -> None:
    """Gunicorn's `pre_request` hook: the request this thread is about to serve."""
    _current.req = req


def _take_request() -> Any:
    req = getattr(_current, "req", None)
    _current.req = None
    return req


def drain(body: Any, sock: socket.socket | None) -> bool:
    """Read what is left of `body` within the bounds; True when its end was reached."""
    deadline = time.monotonic() + DRAIN_MAX_SECONDS
    prior = sock.gettimeout() if sock is not None else None
    read = 0
    try:
        while read <= DRAIN_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if sock is not None:
                sock.settimeout(remaining)
            data = body.read(CHUNK)
            if not data:
                return True
            read += len(data)
        return False
    except Exception:  # noqa: BLE001 - a body that cannot be read to its end (timeout, a
        # malformed chunk) leaves the connection unusable: the answer is to close it
        return False
    finally:
        if sock is not None:
            try:
                sock.settimeout(prior)
            except OSError:
                pass


def read_to_end(body: Any) -> bool:
    """True when gunicorn's body of a Content-Length request has been read to its end, which
    is what almost every request that has a body is by the time it is answered.

    design: `drain` costs two socket timeout changes and a read even then, a fortieth of a
    cheap MCP call under gunicorn (issue 19). A body of another kind (chunked) or of another
    gunicorn version, whose attributes differ, is drained as before."""
    length = getattr(getattr(body, "reader", None), "length", None)
    buffered = getattr(body, "buf", None)
    return length == 0 and buffered is not None and buffered.tell() == 0


class UnreadBodyGuard:
    """WSGI middleware: drain or close, as the module says, when serving under gunicorn."""

    def __init__(self, wsgi_app: Any):
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        req = _take_request()
        if req is not None:
            # a stream handed to the fan-out thread tells gunicorn to close, not keep, its
            # connection (mcp/http/streams.py HandOff)
            environ["mcp.gunicorn_request"] = req
        has_body = environ.get("CONTENT_LENGTH", "0") not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ
        if req is None or not hasattr(req, "force_close") or not has_body:
            return self.wsgi_app(environ, start_response)

        def guarded_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            # a 413's body is by definition too large to be worth reading
            if status.startswith("413") or not (read_to_end(environ["wsgi.input"]) or
                                                 drain(environ["wsgi.input"], environ.get("gunicorn.socket"))):
                req.force_close()
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, guarded_start_response)


def init_app(app: Flask) -> None:
    app.wsgi_app = UnreadBodyGuard(app.wsgi_app)
