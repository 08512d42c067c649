"""A local HTTP server for one fake API: it records every request (path, query parameters,
headers) and answers through a `respond` function, with latency and fault injection.
The per-API modules (wikipedia_server, arxiv_server, ...) supply `respond` and fixtures
in the API's real wire format."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float


Reply = tuple[int, str, bytes]  # status, content type, body
Respond = Callable[[Request], Reply]


@dataclass
class FakeState:
    latency: float = 0.0
    fail_status: int = 0  # >0: every request is answered with this status
    cut_off: bool = False  # announce the whole body, send half of it and close the connection
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: FakeApi
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.serve(b"")

    def do_POST(self) -> None:  # noqa: N802 - a form body's fields join the query's in `params`
        self.serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def serve(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        query = parts.query + ("&" + body.decode("latin-1") if body else "")
        request = Request(parts.path, {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()},
                          {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
        state = self.server.state
        with state.lock:
            state.requests.append(request)
        time.sleep(state.latency)
        if state.fail_status:
            status, ctype, body = state.fail_status, "application/json", b'{"error": "injected failure"}'
        else:
            status, ctype, body = self.server.respond(request)
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2] if state.cut_off else body)
            if state.cut_off:
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout test)


class FakeApi(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, respond: Respond, path: str = "", **state: Any):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.respond = respond
        self.path = path
        self.state = FakeState(**state)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        """The base URL a source is configured with."""
        return f"http://127.0.0.1:{self.server_address[1]}{self.path}"

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def start(self) -> FakeApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def not_found(request: Request) -> Reply:
    return 404, "application/json", b'{"message": "Not Found"}'


def limit(params: dict[str, str], name: str, default: int) -> int:
    try:
        return max(0, int(params.get(name, default)))
    except ValueError:
        return default
