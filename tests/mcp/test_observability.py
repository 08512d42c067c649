"""Headers on every response, request ids, CORS only for configured origins, JSON logs,
and Sentry envelopes sent to the configured DSN."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk

from app import create_app


def test_security_headers_and_request_id_on_every_response(client):
    for response in (client.get("/health"), client.get("/nowhere"), client.post("/tools/x", json={})):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert len(response.headers["X-Request-ID"]) == 32
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    assert client.get("/health", headers={"X-Request-ID": "bad id; drop"}).headers["X-Request-ID"] != "bad id; drop"


@pytest.fixture
def make_app(settings):
    apps = []

    def make(**changes):
        app = create_app(dataclasses.replace(settings, **changes))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["mcp_orchestrator"].runtime.stop()


def test_a_response_carries_its_request_s_id_once_and_keeps_a_security_header_it_sets(make_app):
    app = make_app()

    @app.get("/own-headers")
    def own_headers():
        return "", 204, {"X-Request-ID": "set-by-the-view", "X-Frame-Options": "SAMEORIGIN"}

    response = app.test_client().get("/own-headers", headers={"X-Request-ID": "req-7"})
    assert response.headers.getlist("X-Request-ID") == ["req-7"]
    assert response.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_cors_only_for_configured_origins(make_app):
    client = make_app(cors_origins=("https://dash.example",)).test_client()
    ok = client.options("/tasks", headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://dash.example"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    plain = make_app().test_client().get("/health", headers={"Origin": "https://dash.example"})
    assert "Access-Control-Allow-Origin" not in plain.headers


def test_json_logs_carry_request_id_and_key_name_but_never_the_key(make_app, capfd):
    app = make_app(log_format="json", api_keys=("alice:very-secret-key",))

    @app.get("/test-log")
    def test_log():
        import logging

        logging.getLogger("test").warning("hello from a request")
        return {"ok": True}

    app.test_client().get("/test-log", headers={"X-API-Key": "very-secret-key", "X-Request-ID": "req-42"})
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    record = next(r for r in lines if r["message"] == "hello from a request")
    assert record["request_id"] == "req-42" and record["key_name"] == "alice" and record["level"] == "WARNING"
    assert not any("very-secret-key" in json.dumps(r) for r in lines)


class Envelopes(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        elif self.headers.get("Content-Encoding") == "br":
            # sentry-sdk sends brotli whenever the brotli module is installed (WeasyPrint's
            # fonttools brings it), as Sentry accepts
            import brotli

            body = brotli.decompress(body)
        Envelopes.received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_sentry_receives_unhandled_errors(make_app):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Envelopes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_app(sentry_dsn=f"http://publickey@127.0.0.1:{server.server_address[1]}/42",
                       sentry_environment="test")

        @app.get("/boom")
        def boom():
            raise RuntimeError("kaboom for sentry")

        response = app.test_client().get("/boom")
        assert response.status_code == 500 and response.get_json()["error"] == "internal_error"
        sentry_sdk.flush(5)
        events = b"\n".join(Envelopes.received)
        assert b"kaboom for sentry" in events and b'"environment":"test"' in events.replace(b" ", b"")
    finally:
        sentry_sdk.init(dsn=None)
        server.shutdown()
