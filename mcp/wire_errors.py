"""Errors Gunicorn answers itself, before the app sees the request: a request line over
`limit_request_line` (414), headers over the header limits (431), a request it cannot parse
(400). Gunicorn writes them as an HTML page; here they are the JSON envelope of DESIGN §4
like every other error, so a client can parse whatever it gets."""

from __future__ import annotations

from typing import Any

import gunicorn.util

from . import jsonio
from .errors import HTTP_CODES


def write_error(sock: Any, status: int, reason: str, message: str) -> None:
    body = jsonio.dumpb({"error": HTTP_CODES.get(status, "bad_request"), "message": f"{reason}: {message}"[:300],
                         "details": {}})
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    """Make Gunicorn write its own errors this way (called from gunicorn.conf.py, in the
    master, so every worker forked from it inherits it).

    design: Gunicorn has no setting for its error page; its workers call
    `gunicorn.util.write_error` by module attribute, so replacing that one function is the
    smallest change that reaches every error it writes."""
    gunicorn.util.write_error = write_error
