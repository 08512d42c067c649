"""OAuth protected resource against an external issuer the test runs (metadata + JWKS on
loopback, tokens signed by the test): what a valid token may do, how each bad one is refused."""

from __future__ import annotations

import dataclasses
import re

import pytest

from app import create_app
from tests.fakes.oauth_issuer import FakeIssuer

RESOURCE = "http://localhost/mcp"
METADATA = "http://localhost/.well-known/oauth-protected-resource/mcp"


@pytest.fixture
def issuer():
    fake = FakeIssuer().start()
    yield fake
    fake.stop()


@pytest.fixture
def oauth_client(settings, issuer):
    app = create_app(dataclasses.replace(settings, api_keys=("alice:alice-secret",), oauth_issuer=issuer.url))
    yield app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge_params(response) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_metadata_names_the_resource_its_issuer_and_scopes(oauth_client, issuer):
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        body = oauth_client.get(path).get_json()
        assert body["resource"] == RESOURCE
        assert body["authorization_servers"] == [issuer.url]
        assert body["scopes_supported"] == ["orchestrate", "read"]
    # behind Caddy the prefix is the MCP endpoint and the metadata is reachable under it
    proxied = {"X-Forwarded-Prefix": "/mcp"}
    assert oauth_client.get("/.well-known/oauth-protected-resource", headers=proxied).get_json()["resource"] == RESOURCE
    params = challenge_params(oauth_client.get("/tasks", headers=proxied))
    assert params["resource_metadata"] == "http://localhost/mcp/.well-known/oauth-protected-resource"


def test_every_401_points_at_the_metadata(oauth_client):
    for method, path in (("GET", "/tasks"), ("POST", "/mcp"), ("GET", "/tools"), ("POST", "/tasks/x/cancel")):
        response = oauth_client.open(path, method=method, headers={"X-API-Key": "wrong"})
        assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"
        params = challenge_params(response)
        assert params["resource_metadata"] == METADATA and "error" not in params


def test_a_valid_token_works_and_its_subject_owns_its_tasks(oauth_client, issuer):
    token = issuer.token(RESOURCE)
    handle = oauth_client.post("/tools/orchestrate_search", json={"query": "sqlite store"}, headers=bearer(token))
    assert handle.status_code == 202, handle.get_json()
    status_url = handle.get_json()["status_url"]
    assert oauth_client.get(status_url, headers=bearer(token)).get_json()["task_id"] == handle.get_json()["task_id"]
    other = issuer.token(RESOURCE, sub="user-2")
    assert oauth_client.get(status_url, headers=bearer(other)).status_code == 404
    assert oauth_client.get(status_url, headers={"X-API-Key": "alice-secret"}).status_code == 404
    # the MCP endpoint takes the same token
    init = oauth_client.post("/mcp", headers={**bearer(token), "Accept": "application/json, text/event-stream"},
                             json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "1"}}})
    assert init.status_code == 200 and init.get_json()["result"]["serverInfo"]
    # API keys keep working beside tokens, Bearer or X-API-Key
    assert oauth_client.get("/tasks", headers=bearer("alice-secret")).status_code == 200
    assert oauth_client.get("/tasks", headers={"X-API-Key": "alice-secret"}).status_code == 200


def test_bad_tokens_are_refused_with_the_rfc_6750_code(oauth_client, issuer):
    stranger = FakeIssuer.new_key("k9")
    impostor = FakeIssuer.new_key("k1")  # the issuer's kid, another key: a bad signature
    cases = {
        "wrong audience": issuer.token("http://elsewhere.example/mcp"),
        "wrong issuer": issuer.token(RESOURCE, iss="http://127.0.0.1:1/other"),
        "expired": issuer.token(RESOURCE, exp=1_000_000, nbf=None, iat=None),
        "not yet valid": issuer.token(RESOURCE, nbf=4_000_000_000),
        "unknown key": issuer.token(RESOURCE, key=stranger),
        "bad signature": issuer.token(RESOURCE, key=impostor),
        "not a JWT": "abc.def",
    }
    for why, token in cases.items():
        response = oauth_client.get("/tasks", headers=bearer(token))
        assert response.status_code == 401, why
        params = challenge_params(response)
        assert params["error"] == "invalid_token", why
        assert params["resource_metadata"] == METADATA
        assert response.get_json()["details"]["error"] == "invalid_token"


def test_a_missing_scope_answers_403_insufficient_scope_naming_it(oauth_client, issuer):
    reader = issuer.token(RESOURCE, scope="read")
    assert oauth_client.get("/tasks", headers=bearer(reader)).status_code == 200
    for method, path, body in (("POST", "/tools/orchestrate_search", {"query": "q"}),
                               ("POST", "/tasks/x/cancel", None)):
        response = oauth_client.open(path, method=method, json=body, headers=bearer(reader))
        assert response.status_code == 403 and response.get_json()["error"] == "insufficient_scope"
        params = challenge_params(response)
        assert params["error"] == "insufficient_scope" and params["scope"] == "orchestrate"
    call = oauth_client.post("/mcp", headers=bearer(reader), json={
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "orchestrate_search", "arguments": {"query": "q"}}})
    assert call.status_code == 403 and challenge_params(call)["scope"] == "orchestrate"
    nothing = issuer.token(RESOURCE, scope="profile")
    response = oauth_client.get("/tasks", headers=bearer(nothing))
    assert response.status_code == 403 and challenge_params(response)["scope"] == "read"


def test_a_key_rotation_at_the_issuer_is_picked_up_without_a_restart(oauth_client, issuer):
    old = issuer.token(RESOURCE)
    assert oauth_client.get("/tasks", headers=bearer(old)).status_code == 200
    issuer.rotate("k2")
    new = issuer.token(RESOURCE)
    assert oauth_client.get("/tasks", headers=bearer(new)).status_code == 200
    assert oauth_client.get("/tasks", headers=bearer(old)).status_code == 200
    jwks_fetches = [r for r in issuer.api.requests if r.path.endswith("/jwks")]
    assert len(jwks_fetches) == 2


def test_opaque_tokens_are_introspected_at_the_issuer(settings, issuer):
    import time

    app = create_app(dataclasses.replace(settings, oauth_issuer=issuer.url, oauth_client_id=FakeIssuer.CLIENT[0],
                                         oauth_client_secret=FakeIssuer.CLIENT[1]))
    client = app.test_client()
    try:
        now = int(time.time())
        issuer.opaque["opaque-good"] = {"active": True, "sub": "user-9", "aud": RESOURCE, "iss": issuer.url,
                                        "scope": "read", "exp": now + 300}
        issuer.opaque["opaque-other-resource"] = {**issuer.opaque["opaque-good"], "aud": "https://elsewhere/mcp"}
        for _ in range(2):
            assert client.get("/tasks", headers=bearer("opaque-good")).status_code == 200
        # the answer is kept: one introspection call for both requests
        assert len([r for r in issuer.api.requests if r.path.endswith("/introspect")]) == 1
        for token in ("opaque-unknown", "opaque-other-resource"):
            response = client.get("/tasks", headers=bearer(token))
            assert response.status_code == 401 and challenge_params(response)["error"] == "invalid_token"
        # read only: starting a task needs orchestrate
        started = client.post("/tools/orchestrate_search", json={"query": "q"}, headers=bearer("opaque-good"))
        assert started.status_code == 403
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
    # without credentials an opaque token is refused, saying why
    uncredentialed = create_app(dataclasses.replace(settings, oauth_issuer=issuer.url))
    try:
        response = uncredentialed.test_client().get("/tasks", headers=bearer("opaque-good"))
        assert response.status_code == 401 and "OAUTH_CLIENT_ID" in response.get_json()["message"]
    finally:
        uncredentialed.extensions["mcp_orchestrator"].runtime.stop()


def test_with_oauth_and_no_keys_the_service_is_not_keyless(settings, issuer):
    app = create_app(dataclasses.replace(settings, oauth_issuer=issuer.url))
    client = app.test_client()
    try:
        # a local request (loopback, straight, loopback Host) still needs a token now
        response = client.get("/tasks", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert response.status_code == 401 and challenge_params(response)["resource_metadata"] == METADATA
        assert client.get("/tasks", headers=bearer(issuer.token(RESOURCE))).status_code == 200
        # /metrics stays open to local requests, as with keys
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
