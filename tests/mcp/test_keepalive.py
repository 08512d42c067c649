"""A response sent before its request body was read never poisons the keep-alive connection:
a small unread body is drained and the connection serves the next request; a large one
(a 413) is answered with `Connection: close` and the connection is closed."""

from __future__ import annotations

import json
import socket
import threading

import pytest

pytestmark = pytest.mark.slow


class RawConnection:
    """One HTTP/1.1 connection, spoken by hand so the test sees what the server announces."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.sender: threading.Thread | None = None

    def send(self, method: str, path: str, body: bytes = b"", content_type: str = "application/json") -> None:
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()

        def send_all() -> None:
            try:
                self.sock.sendall(head + body)
            except OSError:
                pass  # the server may close before a refused body is all sent: that is the point

        # design: sent from a thread, since the server answers before it has read the body
        self.sender = threading.Thread(target=send_all, daemon=True)
        self.sender.start()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status_line = self.reader.readline()
        assert status_line, "the server closed the connection without an answer"
        headers = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, value = line.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        body = self.reader.read(int(headers.get("content-length", "0")))
        self.sender.join(30)
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def test_an_unread_body_never_breaks_the_next_request_on_its_connection(service):
    # A body under MAX_CONTENT_LENGTH that the app answers without reading (no such route):
    # drained, so the connection stays usable as announced.
    conn = RawConnection(service.port)
    conn.send("POST", "/no-such-route", b"x" * (200 * 1024))
    status, headers, body = conn.response()
    assert status == 404 and json.loads(body)["error"] == "not_found"
    assert headers["connection"] == "keep-alive"
    conn.send("GET", "/health/live")
    status, _, body = conn.response()
    assert status == 200 and json.loads(body)["status"]
    conn.close()

    # A body over MAX_CONTENT_LENGTH: 413, and the server says it closes, then does.
    conn = RawConnection(service.port)
    conn.send("POST", "/tools/list_orchestrator_patterns", b"x" * (2 * 1024 * 1024))
    status, headers, body = conn.response()
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    assert headers["connection"] == "close"
    assert conn.closed_by_server()
    conn.close()

    # The service is none the worse: a fresh connection is served, and the next request
    # behind a small JSON body that was read is served on the same connection.
    conn = RawConnection(service.port)
    conn.send("POST", "/tools/list_orchestrator_patterns", b"{}")
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"] == "keep-alive"
    conn.send("GET", "/tasks")
    assert conn.response()[0] == 200
    conn.close()


def test_a_body_read_to_its_end_is_not_drained_again_and_any_other_is():
    """Gunicorn's own body objects: a Content-Length body read to its end needs no drain (two
    socket timeout changes and a read saved on nearly every POST); one partly read, or a
    chunked one, still goes through `drain`."""
    from gunicorn.http.body import Body, ChunkedReader, LengthReader
    from gunicorn.http.unreader import IterUnreader

    from mcp.keepalive import read_to_end

    body = Body(LengthReader(IterUnreader([b'{"jsonrpc": "2.0"}']), 18))
    assert not read_to_end(body)
    assert body.read(5) == b'{"jso'
    assert not read_to_end(body)
    assert body.read() == b'nrpc": "2.0"}'
    assert read_to_end(body)
    chunked = Body(ChunkedReader(None, IterUnreader([b"0\r\n\r\n"])))
    assert chunked.read() == b"" and not read_to_end(chunked)
