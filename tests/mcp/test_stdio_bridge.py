"""The stdio bridge reconnects when the server answers 503 with Retry-After (a worker
holding all its streams), instead of handing the error to the client."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from mcp.stdio import LineWriter, bridge


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
