"""The built-in authorization server (OAUTH_BUILTIN=1) step by step: discovery, registration,
the consent page, code + PKCE, refresh rotation, revocation, and what each step refuses."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from app import create_app

REDIRECT = "http://127.0.0.1:33333/callback"


@pytest.fixture
def app_client(settings):
    app = create_app(dataclasses.replace(settings, api_keys=("operator:op-secret",), oauth_builtin=True))
    yield app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(client, **extra) -> dict:
    response = client.post("/oauth/register", json={"client_name": "Test client", "redirect_uris": [REDIRECT],
                                                    "token_endpoint_auth_method": "none",
                                                    "grant_types": ["authorization_code", "refresh_token"],
                                                    "response_types": ["code"], **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def authorize_url(client_id: str, challenge: str, redirect: str = REDIRECT, **extra) -> str:
    return "/oauth/authorize?" + urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect,
                                           "code_challenge": challenge, "code_challenge_method": "S256",
                                           "state": "st-1", "scope": "orchestrate read", **extra})


def consent(client, url: str, key: str = "op-secret", decision: str = "approve"):
    page = client.get(url)
    assert page.status_code == 200, page.data
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post(url, data={"csrf": csrf, "api_key": key, "decision": decision})


def code_from(response) -> str:
    assert response.status_code == 302, response.data
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["state"] == ["st-1"] and query["iss"] == ["http://localhost"]  # RFC 9207
    return query["code"][0]


def test_metadata_points_at_the_builtin_server(app_client):
    resource = app_client.get("/.well-known/oauth-protected-resource/mcp").get_json()
    assert resource["authorization_servers"] == ["http://localhost"]
    meta = app_client.get("/.well-known/oauth-authorization-server").get_json()
    assert meta["issuer"] == "http://localhost"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["registration_endpoint"] == "http://localhost/oauth/register"
    assert app_client.get("/oauth/jwks.json").get_json()["keys"][0]["kty"] == "EC"
    # browser-based clients may run discovery, registration and the token exchange
    preflight = app_client.options("/oauth/token", headers={"Origin": "http://localhost:6274",
                                                            "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in app_client.get("/oauth/authorize").headers


def test_the_full_flow_issues_a_token_whose_subject_is_the_approving_key(app_client):
    client_id = register(app_client)["client_id"]
    verifier, challenge = pkce()
    # the loopback redirect URI's port is free (RFC 8252)
    redirect = "http://127.0.0.1:45678/callback"
    url = authorize_url(client_id, challenge, redirect)
    page = app_client.get(url)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "Test client" in page.get_data(as_text=True)
    code = code_from(consent(app_client, url))
    tokens = app_client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                   "redirect_uri": redirect, "client_id": client_id,
                                                   "code_verifier": verifier}).get_json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and tokens["scope"] == "orchestrate read"
    access = {"Authorization": f"Bearer {tokens['access_token']}"}
    handle = app_client.post("/tools/orchestrate_search", json={"query": "sqlite"}, headers=access).get_json()
    # the token's subject is the key's name: the key sees the task too
    assert app_client.get(handle["status_url"], headers={"X-API-Key": "op-secret"}).status_code == 200
    # a code is single-use
    again = app_client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": redirect, "client_id": client_id,
                                                  "code_verifier": verifier})
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"
    # refresh rotates: a new pair each time (a spent one replayed: see the family test below)
    refreshed = app_client.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                      "refresh_token": tokens["refresh_token"]}).get_json()
    assert refreshed["access_token"] and refreshed["refresh_token"] != tokens["refresh_token"]
    assert app_client.get("/tasks", headers={"Authorization": f"Bearer {refreshed['access_token']}"}).status_code == 200
    # revocation ends a refresh token
    again = app_client.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                  "refresh_token": refreshed["refresh_token"]}).get_json()
    assert app_client.post("/oauth/revoke", data={"token": again["refresh_token"],
                                                  "client_id": client_id}).status_code == 200
    revoked = app_client.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                    "refresh_token": again["refresh_token"]})
    assert revoked.status_code == 400


def test_a_replayed_refresh_token_revokes_its_whole_family(app_client):
    client_id = register(app_client)["client_id"]
    verifier, challenge = pkce()
    code = code_from(consent(app_client, authorize_url(client_id, challenge)))
    first = app_client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": REDIRECT, "client_id": client_id,
                                                  "code_verifier": verifier}).get_json()

    def refresh(token: str):
        return app_client.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                     "refresh_token": token})

    second = refresh(first["refresh_token"]).get_json()
    reuse = refresh(first["refresh_token"])  # an attacker replays the spent token
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    # so the legitimate holder's current token is revoked too: both must sign in again
    assert refresh(second["refresh_token"]).status_code == 400


def test_pkce_and_the_code_verifier_are_required(app_client):
    client_id = register(app_client)["client_id"]
    no_pkce = app_client.get(authorize_url(client_id, "", code_challenge_method=""))
    assert no_pkce.status_code == 302 and "error=invalid_request" in no_pkce.headers["Location"]
    plain = app_client.get(authorize_url(client_id, "x" * 43, code_challenge_method="plain"))
    assert plain.status_code == 302 and "error=invalid_request" in plain.headers["Location"]
    verifier, challenge = pkce()
    code = code_from(consent(app_client, authorize_url(client_id, challenge)))
    wrong = app_client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": REDIRECT, "client_id": client_id,
                                                  "code_verifier": pkce()[0]})
    assert wrong.status_code == 400 and wrong.get_json()["error"] == "invalid_grant"


def test_the_consent_page_refuses_forged_or_unkeyed_approvals(app_client):
    client_id = register(app_client)["client_id"]
    _, challenge = pkce()
    url = authorize_url(client_id, challenge)
    # no CSRF token / a token from another page: refused, nothing issued
    assert app_client.post(url, data={"api_key": "op-secret", "decision": "approve"}).status_code == 403
    assert app_client.post(url, data={"csrf": "forged", "api_key": "op-secret", "decision": "approve"}).status_code == 403
    # a wrong key: refused
    assert consent(app_client, url, key="wrong").status_code == 403
    # the operator denies: the client hears access_denied
    denied = consent(app_client, url, decision="deny")
    assert denied.status_code == 302 and "error=access_denied" in denied.headers["Location"]


def test_redirect_uris_are_checked_exactly(app_client):
    client_id = register(app_client)["client_id"]
    _, challenge = pkce()
    for other in ("http://127.0.0.1:33333/elsewhere", "https://evil.example/callback", "http://127.0.0.1.evil.example/callback"):
        response = app_client.get(authorize_url(client_id, challenge, other))
        assert response.status_code == 400, other  # answered here, never redirected to the stranger
        assert response.get_json()["error"] in ("invalid_request", "invalid_client")
    unknown = app_client.get(authorize_url("no-such-client", challenge))
    assert unknown.status_code == 400
    bad = app_client.post("/oauth/register", json={"redirect_uris": ["http://evil.example/cb"]})
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_client_metadata"


def full_flow(client) -> dict:
    client_id = register(client)["client_id"]
    verifier, challenge = pkce()
    code = code_from(consent(client, authorize_url(client_id, challenge)))
    return client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                             "redirect_uri": REDIRECT, "client_id": client_id,
                                             "code_verifier": verifier}).get_json()


def test_signing_keys_rotate_with_overlap(app_client):
    import json
    import time

    from mcp.oauth.server import KEY_ROTATION, SIGNING_KEYS_KEY

    before = full_flow(app_client)["access_token"]
    old_kid = app_client.get("/oauth/jwks.json").get_json()["keys"][0]["kid"]
    # the key is due: every worker reading the store from now on rotates it (one of them does)
    store = app_client.application.extensions["mcp_orchestrator"].store
    keys = json.loads(store.cache_get(SIGNING_KEYS_KEY))
    keys[0]["created_at"] = time.time() - KEY_ROTATION - 1
    store.cache_set(SIGNING_KEYS_KEY, json.dumps(keys), 3600)
    app_client.application.extensions["mcp_oauth_server"].keys.records(refresh=True)
    kids = [k["kid"] for k in app_client.get("/oauth/jwks.json").get_json()["keys"]]
    assert len(kids) == 2 and kids[1] == old_kid
    after = full_flow(app_client)["access_token"]
    # the old key still verifies the tokens it signed, the new one signs from now on
    for token in (before, after):
        assert app_client.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # a key retired longer ago than an access token lives is dropped at the next rotation
    keys = json.loads(store.cache_get(SIGNING_KEYS_KEY))
    keys[0]["created_at"] = time.time() - KEY_ROTATION - 1
    keys[1]["retired_at"] = time.time() - 2 * 3600
    store.cache_set(SIGNING_KEYS_KEY, json.dumps(keys), 3600)
    app_client.application.extensions["mcp_oauth_server"].keys.records(refresh=True)
    now_kids = [k["kid"] for k in app_client.get("/oauth/jwks.json").get_json()["keys"]]
    assert len(now_kids) == 2 and now_kids[1] == kids[0] and old_kid not in now_kids


def test_the_token_endpoint_is_rate_limited(app_client):
    answers = [app_client.post("/oauth/token", data={"grant_type": "authorization_code", "code": "x",
                                                     "client_id": "nobody"}).status_code for _ in range(31)]
    assert set(answers[:30]) <= {400, 401} and answers[30] == 429


@pytest.fixture
def tls_site(tmp_path, monkeypatch):
    """A real HTTPS server on loopback (a certificate made here, trusted through SSL_CERT_FILE)
    serving client ID metadata documents from `site.documents`."""
    import datetime
    import ipaddress
    import json
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from tests.fakes.http_fake import FakeApi

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    documents: dict[str, dict] = {}

    def respond(request):
        doc = documents.get(request.path)
        return (200, "application/json", json.dumps(doc).encode()) if doc else (404, "application/json", b"{}")

    site = FakeApi(respond)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    site.socket = context.wrap_socket(site.socket, server_side=True)
    site.documents = documents
    site.https = f"https://127.0.0.1:{site.server_address[1]}"
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    yield site.start()
    site.stop()


def test_a_client_id_metadata_document_stands_in_for_registration(settings, tls_site):
    client_id = f"{tls_site.https}/oauth/client.json"
    tls_site.documents["/oauth/client.json"] = {"client_id": client_id, "client_name": "Document client",
                                                "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}
    # loopback is not public: this site is reachable only with FETCH_ALLOW_PRIVATE=1, as for fetch_url
    app = create_app(dataclasses.replace(settings, api_keys=("operator:op-secret",), oauth_builtin=True,
                                         fetch_allow_private=True))
    client = app.test_client()
    try:
        assert client.get("/.well-known/oauth-authorization-server").get_json()["client_id_metadata_document_supported"]
        verifier, challenge = pkce()
        url = authorize_url(client_id, challenge)
        assert "Document client" in client.get(url).get_data(as_text=True)
        code = code_from(consent(client, url))
        tokens = client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                                                   "redirect_uri": REDIRECT, "client_id": client_id,
                                                   "code_verifier": verifier}).get_json()
        assert client.get("/tasks", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200
        # a document that names another client is refused
        tls_site.documents["/oauth/liar.json"] = {**tls_site.documents["/oauth/client.json"], "client_id": client_id}
        liar = client.get(authorize_url(f"{tls_site.https}/oauth/liar.json", challenge))
        assert liar.status_code == 400 and "another client_id" in liar.get_json()["error_description"]
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()


def test_client_id_documents_are_fetched_through_the_ssrf_guard(app_client, tls_site):
    client_id = f"{tls_site.https}/oauth/client.json"
    tls_site.documents["/oauth/client.json"] = {"client_id": client_id, "redirect_uris": [REDIRECT]}
    response = app_client.get(authorize_url(client_id, pkce()[1]))
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_client"
    assert "non-public address" in response.get_json()["error_description"]
    assert tls_site.requests == []  # refused before any connection


def test_confidential_clients_authenticate_and_resources_are_checked(app_client):
    registered = register(app_client, token_endpoint_auth_method="client_secret_post")
    client_id, secret = registered["client_id"], registered["client_secret"]
    verifier, challenge = pkce()
    # a token for another resource is not issued (RFC 8707)
    other = app_client.get(authorize_url(client_id, challenge, resource="https://elsewhere.example/mcp"))
    assert other.status_code == 400 and other.get_json()["error"] == "invalid_target"
    code = code_from(consent(app_client, authorize_url(client_id, challenge, resource="http://localhost/mcp")))
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id,
                "code_verifier": verifier}
    wrong = app_client.post("/oauth/token", data={**exchange, "client_secret": "not-it"})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "invalid_client"
    # the failed attempt spent nothing: the code is taken only once the client is authenticated
    tokens = app_client.post("/oauth/token", data={**exchange, "client_secret": secret})
    assert tokens.status_code == 200 and tokens.get_json()["access_token"]
