"""Local means local to the service, not to its socket: keyless mode and the /metrics
exemption serve a request only when it comes from loopback straight to the service."""

from __future__ import annotations

import dataclasses

import pytest

from app import create_app

FORWARDING = [{"Forwarded": "for=203.0.113.9"}, {"X-Forwarded-For": "203.0.113.9"}, {"X-Real-IP": "203.0.113.9"},
              {"X-Forwarded-Host": "example.org"}, {"X-Forwarded-Prefix": "/mcp"},
              {"X-Forwarded-For": "127.0.0.1"}]
PRIVATE = [("POST", "/tools/orchestrate_search"), ("GET", "/tasks"), ("GET", "/stream/search_x"),
           ("POST", "/mcp"), ("POST", "/"), ("GET", "/metrics"), ("GET", "/stats")]


def make_client(settings, **changes):
    app = create_app(dataclasses.replace(settings, **changes))
    return app, app.test_client()


@pytest.fixture
def keyless(settings):
    app, client = make_client(settings)
    yield client
    app.extensions["mcp_orchestrator"].runtime.stop()


@pytest.fixture(params=[0, 1])
def keyed(settings, request):
    app, client = make_client(settings, api_keys=("ops:ops-secret",), trusted_proxies=request.param)
    yield client
    app.extensions["mcp_orchestrator"].runtime.stop()


def test_keyless_serves_a_local_client_as_before(keyless):
    assert keyless.get("/tasks").status_code == 200
    assert keyless.post("/tools/orchestrate_search", json={"query": "sqlite store"}).status_code == 202
    assert keyless.get("/metrics").status_code == 200


@pytest.mark.parametrize("headers", FORWARDING)
@pytest.mark.parametrize("method, path", PRIVATE)
def test_keyless_refuses_a_forwarded_request_saying_how_to_add_keys(keyless, headers, method, path):
    response = keyless.open(path, method=method, headers=headers, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = response.get_json()
    assert body["error"] == "unauthorized" and body["details"]["reason"] == "no_api_keys_configured"
    assert "no API keys" in body["message"] and "API_KEYS" in body["message"]


def test_keyless_refuses_a_remote_peer_and_a_foreign_host(keyless):
    assert keyless.get("/tasks", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 401
    # a foreign Host sent straight to a loopback service is DNS rebinding: 421, as on /mcp
    assert keyless.get("/tasks", headers={"Host": "orchestrator.example.org"}).status_code == 421
    assert keyless.get("/tasks", headers={"Host": "[::1]:5060"}).status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/health/live"])
def test_public_routes_stay_public_through_a_proxy(keyless, path):
    assert keyless.get(path, headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Prefix": "/mcp"},
                       environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200


def test_metrics_need_a_key_unless_the_request_is_local(keyed):
    assert keyed.get("/metrics").status_code == 200
    keyed_through_proxy = {"X-API-Key": "ops-secret", "X-Forwarded-For": "203.0.113.9"}
    assert keyed.get("/metrics", headers=keyed_through_proxy).status_code == 200
    for headers in FORWARDING:
        assert keyed.get("/metrics", headers=headers).status_code == 401, headers
    # a forged loopback address from a peer that is not loopback is never local
    forged = keyed.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert forged.status_code == 401


def test_rate_limits_count_the_client_the_trusted_hop_reports(settings):
    app, client = make_client(settings, trusted_proxies=1, rate_limit_default="2 per minute")
    try:
        def hit(forwarded_for):
            return client.get("/", headers={"X-Forwarded-For": forwarded_for}).status_code

        # the client's own words ("127.0.0.1", "198.51.100.1") come before the hop the proxy appends
        assert [hit("127.0.0.1, 203.0.113.9"), hit("198.51.100.1, 203.0.113.9")] == [200, 200]
        assert hit("203.0.113.9") == 429
        assert hit("203.0.113.10") == 200
        # a report that is not an address counts as the socket peer (127.0.0.1), one bucket
        assert [hit("not-an-address"), hit("unknown"), hit("127.0.0.1")] == [200, 200, 429]
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
