"""A local HTTP receiver that records every POST (path, headers, body): what a webhook
subscriber, an alert endpoint or Alertmanager's webhook target sees."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.received.append((dict(self.headers), body))
        self.server.paths.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def receiver(port: int = 0) -> ThreadingHTTPServer:
    """Started on 127.0.0.1 (a free port unless given); `received` holds (headers, body), `paths` the paths."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.received = []
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
