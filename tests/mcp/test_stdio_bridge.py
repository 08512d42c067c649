"""The stdio bridge against a small loopback HTTP endpoint that records what it is sent:
messages are relayed concurrently, every POST after initialize carries the session and
`MCP-Protocol-Version`, and a session the endpoint lost is initialized again."""

from __future__ import annotations

import io
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from mcp.stdio import LineWriter, bridge
from mcp.stdio_bridge import HttpBridge


class Endpoint(BaseHTTPRequestHandler):
    """initialize opens session s<n>; `slow` waits for the test's go; a session in `lost` is 404."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[dict, dict]] = []
    go = threading.Event()
    lost: set[str] = set()
    sessions = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        headers = {k.lower(): v for k, v in self.headers.items()}
        type(self).seen.append((message, headers))
        extra = {}
        if headers.get("mcp-session-id") in self.lost and message.get("method") != "initialize":
            return self.answer(404, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "gone"}})
        if "id" not in message:
            return self.answer(202, None)
        if message["method"] == "initialize":
            type(self).sessions += 1
            extra["Mcp-Session-Id"] = f"s{self.sessions}"
            result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "t", "version": "1"}}
        elif message["method"] == "slow":
            self.go.wait(10)
            result = {"slow": True}
        else:
            result = {}
        self.answer(200, {"jsonrpc": "2.0", "id": message["id"], "result": result}, extra)

    def answer(self, status: int, body: dict | None, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def endpoint():
    Endpoint.seen, Endpoint.lost, Endpoint.sessions = [], set(), 0
    Endpoint.go = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mcp"
    Endpoint.go.set()
    server.shutdown()


def start_bridge(url: str):
    lines: queue.Queue = queue.Queue()
    written: queue.Queue = queue.Queue()

    def messages():
        while (item := lines.get()) is not None:
            yield item

    client = httpx.Client(timeout=10)
    thread = threading.Thread(target=HttpBridge(written.put, url, None, client).run, args=(messages(),), daemon=True)
    thread.start()
    return lines, written


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}


def test_a_ping_is_answered_while_a_slow_call_waits_and_every_post_carries_the_version(endpoint):
    lines, written = start_bridge(endpoint)
    lines.put(INITIALIZE)
    assert written.get(timeout=5)["result"]["protocolVersion"] == "2025-11-25"
    lines.put({"jsonrpc": "2.0", "method": "notifications/initialized"})
    lines.put({"jsonrpc": "2.0", "id": 2, "method": "slow"})
    lines.put({"jsonrpc": "2.0", "id": 3, "method": "ping"})
    assert written.get(timeout=5) == {"jsonrpc": "2.0", "id": 3, "result": {}}  # not behind the slow call
    Endpoint.go.set()
    assert written.get(timeout=5)["id"] == 2
    lines.put(None)
    after_initialize = [headers for message, headers in Endpoint.seen if message.get("method") != "initialize"]
    assert len(after_initialize) == 3
    assert all(h["mcp-protocol-version"] == "2025-11-25" and h["mcp-session-id"] == "s1" for h in after_initialize)


def test_a_session_the_endpoint_lost_is_initialized_again_with_the_clients_parameters(endpoint):
    lines, written = start_bridge(endpoint)
    lines.put(INITIALIZE)
    written.get(timeout=5)
    Endpoint.lost.add("s1")
    lines.put({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert written.get(timeout=5) == {"jsonrpc": "2.0", "id": 2, "result": {}}
    lines.put(None)
    initializes = [message for message, _ in Endpoint.seen if message.get("method") == "initialize"]
    assert [m["params"] for m in initializes] == [INITIALIZE["params"]] * 2
    assert Endpoint.seen[-1][1]["mcp-session-id"] == "s2"


def test_bridge_retries_a_503_after_retry_after_then_relays_the_answer():
    answers = [(503, {"Retry-After": "0"}, {"error": "unavailable", "message": "busy", "details": {}}),
               (200, {}, {"jsonrpc": "2.0", "id": 1, "result": {}})]
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, headers, body = answers.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json",
                                "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = io.StringIO()
    try:
        bridge(['{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n'], LineWriter(out),
               f"http://127.0.0.1:{server.server_port}/mcp", None)
    finally:
        server.shutdown()
    assert len(seen) == 2 and seen[0] == seen[1]
    assert json.loads(out.getvalue()) == {"jsonrpc": "2.0", "id": 1, "result": {}}
