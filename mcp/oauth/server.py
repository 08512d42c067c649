"""The built-in OAuth 2.1 authorization server (OAUTH_BUILTIN=1), built on Authlib.

For a single-operator host: MCP clients register themselves (RFC 7591), send the operator to
a consent page where the operator approves with an API key, and get a short-lived JWT
access token (subject: the key's name) and a refresh token rotated on every use. Authorization
code with PKCE S256 only; redirect URIs compared exactly, the port of a loopback one free
(RFC 8252 §7.3). Clients, codes, refresh tokens, consent CSRF tokens and signing keys live
in the store, so any worker on any host serves any step."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (AuthorizationCodeMixin, ClientMixin, InvalidClientError, InvalidRequestError,
                                    OAuth2Error, TokenMixin, grants)
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import Blueprint, Flask, Response, jsonify, request
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from ..http import json_body
from ..security import load_keys, match
from ..settings import Settings
from ..store import Store
from .clientdocs import ClientDocError, ClientDocuments, is_document_id, loopback_redirect, unsafe_redirect
from .resource import base_url, open_to_browsers, resource_url

log = logging.getLogger(__name__)

CLIENT_KEY = "oauth:client:{}"
CODE_KEY = "oauth:code:{}"
REFRESH_KEY = "oauth:refresh:{}"
SPENT_KEY = "oauth:refresh-spent:{}"  # a used refresh token -> its family, to notice a replay
REVOKED_FAMILY_KEY = "oauth:family-revoked:{}"
CONSENT_KEY = "oauth:consent:{}"
SIGNING_KEYS_KEY = "oauth:signing-keys"
ROTATION_LOCK = "oauth-key-rotation"

CLIENT_TTL = 180 * 86400.0  # an unused registration is forgotten after this
CODE_TTL = 60.0  # authorization codes: single use, one minute
REFRESH_TTL = 30 * 86400.0
CONSENT_TTL = 600.0
KEY_ROTATION = 30 * 86400.0  # a new signing key this often; the old one verifies until its tokens expire
KEYS_RECORD_TTL = 10 * 365 * 86400.0
KEYS_CACHE = 60.0  # seconds a worker keeps the key set before reading the store again
TOKEN_RATE_LIMIT = "30 per minute"
CSRF_COOKIE = "mcp_oauth_csrf"
AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- signing keys --------------------------------------------------------------------------

def new_signing_key() -> dict[str, Any]:
    kid = secrets.token_urlsafe(8)
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"}, private=True)
    return {"jwk": key.as_dict(private=True), "created_at": time.time()}


class StoreKeys:
    """The built-in server's ES256 keys, newest first, shared through the store; a KeySource
    for mcp.oauth.tokens. Rotated every KEY_ROTATION by whichever worker sees it due first."""

    def __init__(self, store: Store, access_ttl: float = 3600.0):
        self.store = store
        self.access_ttl = access_ttl
        self.worker = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.lock = threading.Lock()
        self._keys: list[dict[str, Any]] = []
        self._loaded_at = 0.0

    def _read(self) -> list[dict[str, Any]]:
        raw = self.store.cache_get(SIGNING_KEYS_KEY)
        if raw is None:
            self.store.cache_add(SIGNING_KEYS_KEY, json.dumps([new_signing_key()]), KEYS_RECORD_TTL)
            raw = self.store.cache_get(SIGNING_KEYS_KEY) or "[]"
        keys = json.loads(raw)
        now = time.time()
        if keys and now - keys[0]["created_at"] > KEY_ROTATION and self.store.try_lock(ROTATION_LOCK, self.worker, 30):
            # design: a key stops signing when it is retired, and stays published until every
            # token it signed has expired
            keys[0]["retired_at"] = now
            keep = [k for k in keys if now - k.get("retired_at", now) < self.access_ttl + 60]
            keys = [new_signing_key(), *keep]
            self.store.cache_set(SIGNING_KEYS_KEY, json.dumps(keys), KEYS_RECORD_TTL)
        return keys

    def records(self, refresh: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            if refresh or not self._keys or time.monotonic() - self._loaded_at > KEYS_CACHE:
                self._keys, self._loaded_at = self._read(), time.monotonic()
            return self._keys

    def key_set(self, refresh: bool = False) -> KeySet:
        return KeySet.import_key_set({"keys": [k["jwk"] for k in self.records(refresh)]})

    def signing_key(self) -> ECKey:
        return ECKey.import_key(self.records()[0]["jwk"])

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [ECKey.import_key(k["jwk"]).as_dict(private=False) for k in self.records()]}


# -- models Authlib works with -------------------------------------------------------------

@dataclass
class User:
    name: str

    def get_user_id(self) -> str:
        return self.name


def same_redirect(registered: str, presented: str) -> bool:
    """Exact match; for a loopback http URI any port (RFC 8252 §7.3), all else equal."""
    if registered == presented:
        return True
    if not (loopback_redirect(registered) and loopback_redirect(presented)):
        return False
    a, b = urlsplit(registered), urlsplit(presented)
    return (a.hostname, a.path, a.query, a.fragment) == (b.hostname, b.path, b.query, b.fragment)


@dataclass
class Client(ClientMixin):
    client_id: str
    metadata: dict[str, Any]
    secret_digest: str | None = None
    supported_scopes: tuple[str, ...] = ()

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.metadata.get("redirect_uris") or []
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        registered = (self.metadata.get("scope") or " ".join(self.supported_scopes)).split()
        allowed = [s for s in self.supported_scopes if s in registered]
        wanted = scope.split() if scope else allowed
        return " ".join(s for s in allowed if s in wanted)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return any(same_redirect(r, redirect_uri) for r in self.metadata.get("redirect_uris") or [])

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_digest is not None and hmac.compare_digest(self.secret_digest, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint == "token":
            return method == self.metadata.get("token_endpoint_auth_method", "client_secret_basic")
        return True

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in (self.metadata.get("grant_types") or ["authorization_code", "refresh_token"])


@dataclass
class Code(AuthorizationCodeMixin):
    data: dict[str, Any]

    @property
    def code_challenge(self) -> str | None:
        return self.data.get("code_challenge")

    @property
    def code_challenge_method(self) -> str | None:
        return self.data.get("code_challenge_method")

    def get_redirect_uri(self) -> str:
        return self.data["redirect_uri"]

    def get_scope(self) -> str:
        return self.data["scope"]

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> float:
        return self.data["auth_time"]


@dataclass
class Refresh(TokenMixin):
    data: dict[str, Any]
    user: User = field(init=False)

    def __post_init__(self) -> None:
        self.user = User(self.data["subject"])

    def check_client(self, client: Client) -> bool:
        return client.get_client_id() == self.data["client_id"]

    def get_scope(self) -> str:
        return self.data["scope"]

    def get_expires_in(self) -> int:
        return int(REFRESH_TTL)

    def is_expired(self) -> bool:
        return False  # the store forgets it when it expires

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> User:
        return self.user

    def get_client(self):  # pragma: no cover - Authlib asks only in flows we do not offer
        return None


# -- the server ----------------------------------------------------------------------------

class S256Only(CodeChallenge):
    """PKCE required of every client (OAuth 2.1), S256 only."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("code_challenge is required (PKCE, S256)")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        return super().validate_code_challenge(grant, redirect_uri)


class BuiltinServer:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.keys = StoreKeys(store, settings.oauth_access_token_ttl_seconds)
        self.api_keys = load_keys(settings)
        self.documents = ClientDocuments(store, settings.fetch_allow_private)
        self.server = AuthorizationServer(query_client=self.query_client, save_token=self.save_token)
        self.server.scopes_supported = list(settings.oauth_scope_list)
        outer = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

            def save_authorization_code(self, code, req):
                data = {"client_id": req.client.get_client_id(), "redirect_uri": req.payload.redirect_uri,
                        "scope": req.client.get_allowed_scope(req.payload.scope), "subject": req.user.name,
                        "code_challenge": req.payload.data.get("code_challenge"),
                        "code_challenge_method": req.payload.data.get("code_challenge_method"),
                        "auth_time": time.time()}
                outer.store.cache_set(CODE_KEY.format(digest(code)), json.dumps(data), CODE_TTL)

            def query_authorization_code(self, code, client):
                # design: taken, not read: a code is spent by its first use, even a failed one
                raw = outer.store.cache_take(CODE_KEY.format(digest(code)))
                data = json.loads(raw) if raw else None
                if data is None or data["client_id"] != client.get_client_id():
                    return None
                return Code(data)

            def delete_authorization_code(self, authorization_code):
                pass  # already taken from the store

            def authenticate_user(self, authorization_code):
                return User(authorization_code.data["subject"])

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token):
                # design: taken at once, so each refresh token is used once (rotation) and of
                # two concurrent uses only one succeeds. A spent one presented again means it
                # leaked: every refresh token descended from the same consent is revoked
                # (OAuth 2.0 Security BCP §4.14.2).
                hashed = digest(refresh_token)
                raw = outer.store.cache_take(REFRESH_KEY.format(hashed))
                if raw is None:
                    family = outer.store.cache_get(SPENT_KEY.format(hashed))
                    if family:
                        log.warning("a spent refresh token was presented again: its family is revoked")
                        outer.store.cache_set(REVOKED_FAMILY_KEY.format(family), "1", REFRESH_TTL)
                    return None
                data = json.loads(raw)
                outer.store.cache_set(SPENT_KEY.format(hashed), data["family"], REFRESH_TTL)
                if outer.store.cache_get(REVOKED_FAMILY_KEY.format(data["family"])):
                    return None
                return Refresh(data)

            def authenticate_user(self, refresh_token):
                return refresh_token.get_user()

            def revoke_old_credential(self, refresh_token):
                pass  # already taken from the store

        class Registration(ClientRegistrationEndpoint):
            def authenticate_token(self, req):
                return True  # open registration: the operator approves each client on the consent page

            def resolve_public_key(self, req):
                return None

            def get_server_metadata(self):
                return outer.metadata()

            def generate_client_info(self, req):
                info = super().generate_client_info(req)
                if (req.payload.data or {}).get("token_endpoint_auth_method") == "none":
                    info.pop("client_secret", None)
                    info.pop("client_secret_expires_at", None)
                return info

            def save_client(self, client_info, client_metadata, req):
                uris = client_metadata.get("redirect_uris") or []
                if not uris:
                    raise InvalidClientMetadataError("redirect_uris is required")
                for uri in uris:
                    if unsafe_redirect(uri):
                        raise InvalidClientMetadataError(f"redirect_uris: {unsafe_redirect(uri)}")
                metadata = {**client_metadata, "client_id_issued_at": client_info["client_id_issued_at"]}
                secret = client_info.get("client_secret")
                record = {"metadata": metadata, "secret_digest": digest(secret) if secret else None}
                outer.store.cache_set(CLIENT_KEY.format(client_info["client_id"]), json.dumps(record), CLIENT_TTL)
                return outer.query_client(client_info["client_id"])

        class Revocation(RevocationEndpoint):
            CLIENT_AUTH_METHODS = AUTH_METHODS

            def query_token(self, token_string, token_type_hint):
                if token_type_hint == "access_token":
                    return None  # JWT access tokens are short-lived and not kept
                raw = outer.store.cache_get(REFRESH_KEY.format(digest(token_string)))
                return Refresh({**json.loads(raw), "token": token_string}) if raw else None

            def revoke_token(self, token, req):
                outer.store.cache_take(REFRESH_KEY.format(digest(token.data["token"])))

        class Issuer(IssuerParameter):
            def get_issuer(self) -> str:
                return outer.issuer()  # RFC 9207: the client checks who answered (mix-up defence)

        self.server.register_grant(CodeGrant, [S256Only(required=True)])
        self.server.register_extension(Issuer())
        self.server.register_grant(RefreshGrant)
        self.server.register_endpoint(Registration)
        self.server.register_endpoint(Revocation)

    # -- storage callbacks ---------------------------------------------------------------

    def query_client(self, client_id: str) -> Client | None:
        if is_document_id(client_id):
            try:
                return Client(client_id, self.documents.metadata(client_id), None, self.settings.oauth_scope_list)
            except ClientDocError as exc:
                log.info("refused a client ID metadata document: %s", exc)
                raise InvalidClientError(description=str(exc).replace('"', "'").replace("\\", "/")) from None
        raw = self.store.cache_get(CLIENT_KEY.format(client_id)) if client_id else None
        if raw is None:
            return None
        record = json.loads(raw)
        return Client(client_id, record["metadata"], record.get("secret_digest"), self.settings.oauth_scope_list)

    def save_token(self, token: dict[str, Any], req) -> None:
        if token.get("refresh_token"):
            previous = getattr(req, "refresh_token", None)
            family = previous.data["family"] if isinstance(previous, Refresh) else secrets.token_urlsafe(12)
            data = {"client_id": req.client.get_client_id(), "subject": req.user.name, "scope": token.get("scope", ""),
                    "family": family}
            self.store.cache_set(REFRESH_KEY.format(digest(token["refresh_token"])), json.dumps(data), REFRESH_TTL)

    def generate_token(self, grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True):
        now = int(time.time())
        ttl = int(self.settings.oauth_access_token_ttl_seconds)
        key = self.keys.signing_key()
        claims = {"iss": self.issuer(), "sub": user.name, "aud": resource_url(self.settings),
                  "client_id": client.get_client_id(), "scope": scope or "", "iat": now, "nbf": now,
                  "exp": now + ttl, "jti": secrets.token_urlsafe(12)}
        token = {"token_type": "Bearer", "expires_in": ttl, "scope": scope or "",
                 "access_token": jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, KeySet([key]))}
        if include_refresh_token:
            token["refresh_token"] = secrets.token_urlsafe(32)
        return token

    # -- documents -----------------------------------------------------------------------

    def issuer(self) -> str:
        return self.settings.oauth_issuer or base_url(self.settings)

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        root = base_url(self.settings)
        return {
            "issuer": self.issuer(),
            "authorization_endpoint": f"{root}/oauth/authorize",
            "token_endpoint": f"{root}/oauth/token",
            "registration_endpoint": f"{root}/oauth/register",
            "revocation_endpoint": f"{root}/oauth/revoke",
            "jwks_uri": f"{root}/oauth/jwks.json",
            "scopes_supported": list(self.settings.oauth_scope_list),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": True,
        }


# -- routes --------------------------------------------------------------------------------

bp = Blueprint("oauth_server", __name__)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@bp.after_request
def cors(response: Response) -> Response:
    # the consent page is a top-level navigation, not a cross-origin call
    return response if request.path == "/oauth/authorize" else open_to_browsers(response)


def builtin() -> BuiltinServer:
    from flask import current_app

    return current_app.extensions["mcp_oauth_server"]


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    response = jsonify({"error": error, "error_description": description})
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def bad_characters() -> Response | None:
    """OAuth parameters are printable ASCII (RFC 6749 Appendix A); anything else is refused
    here, naming the field (Authlib cannot put such a value in its error description)."""
    for name, value in request.values.items(multi=True):
        if name != "api_key" and not all(" " <= c <= "~" for c in name + value):
            return oauth_error("invalid_request", f"{name or 'a parameter'}: only printable ASCII is allowed")
    return None


def wrong_resource() -> Response | None:
    """RFC 8707: a `resource` other than this service's MCP URL is refused."""
    wanted = request.values.get("resource")
    if wanted and wanted.rstrip("/") != resource_url(builtin().settings).rstrip("/"):
        return oauth_error("invalid_target", f"this server issues tokens for {resource_url(builtin().settings)} only")
    return None


@bp.get("/.well-known/oauth-authorization-server")
def authorization_server_metadata():
    return jsonify(builtin().metadata())


@bp.get("/oauth/jwks.json")
def jwks():
    return jsonify(builtin().keys.public_jwks())


@bp.post("/oauth/register")
def register():
    json_body(allow_empty=False)  # a JSON object, or 400/415 naming what is wrong, before Authlib reads it
    try:
        return builtin().server.create_endpoint_response(ClientRegistrationEndpoint.ENDPOINT_NAME)
    except ValueError as exc:  # Authlib refuses to describe some values (non-ASCII) in its errors
        return oauth_error("invalid_client_metadata", str(exc))


@bp.post("/oauth/revoke")
def revoke():
    refused = bad_characters()
    if refused is not None:
        return refused
    return builtin().server.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME)


@bp.post("/oauth/token")
def token():
    refused = bad_characters() or wrong_resource()
    if refused is not None:
        return refused
    response = builtin().server.create_token_response()
    response.headers["Cache-Control"] = "no-store"
    return response


def consent_grant():
    """The validated authorization request, or the error response to send instead."""
    bs = builtin()
    try:
        return bs.server.get_consent_grant(end_user=None), None
    except OAuth2Error as error:
        # design: an unknown client or a redirect URI it did not register is answered here,
        # never by a redirect to that URI (RFC 6749 §4.1.2.1)
        if error.redirect_uri and error.error not in ("invalid_client",):
            return None, bs.server.handle_error_response(None, error)
        return None, oauth_error(error.error, error.description or error.error)


@bp.get("/oauth/authorize")
def authorize_page():
    refused = bad_characters() or wrong_resource()
    if refused is not None:
        return refused
    grant, error = consent_grant()
    if error is not None:
        return error
    csrf = secrets.token_urlsafe(32)
    builtin().store.cache_set(CONSENT_KEY.format(csrf), digest(request.query_string.decode()), CONSENT_TTL)
    response = Response(consent_html(grant.client, grant.request.payload.scope, grant.redirect_uri, csrf),
                        mimetype="text/html")
    response.headers.update(SECURITY_HEADERS)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=int(CONSENT_TTL), httponly=True, samesite="Strict",
                        secure=request.scheme == "https" or request.headers.get("X-Forwarded-Proto") == "https")
    return response


@bp.post("/oauth/authorize")
def authorize_decision():
    bs = builtin()
    refused = bad_characters()
    if refused is not None:
        return refused
    form_csrf, cookie_csrf = request.form.get("csrf", ""), request.cookies.get(CSRF_COOKIE, "")
    bound = bs.store.cache_take(CONSENT_KEY.format(form_csrf)) if form_csrf else None
    if not (form_csrf and hmac.compare_digest(form_csrf, cookie_csrf) and bound
            and hmac.compare_digest(bound, digest(request.query_string.decode()))):
        log.info("refused a consent without a valid CSRF token")
        return oauth_error("access_denied", "the consent form expired or was not sent from this page: reload it", 403)
    grant, error = consent_grant()
    if error is not None:
        return error
    if request.form.get("decision") != "approve":
        return bs.server.create_authorization_response(grant_user=None, grant=grant)
    name = match(bs.api_keys, request.form.get("api_key", "").strip()) if bs.api_keys else None
    if name is None:
        log.info("refused a consent with a wrong API key")
        return oauth_error("access_denied", "the API key is not valid: reload the page and try again", 403)
    log.info("client %s approved by %s", grant.client.get_client_id(), name)
    return bs.server.create_authorization_response(grant_user=User(name), grant=grant)


def consent_html(client: Client, scope: str | None, redirect_uri: str, csrf: str) -> str:
    name = escape(str(client.metadata.get("client_name") or client.get_client_id()))
    scopes = escape(client.get_allowed_scope(scope) or "(none)")
    target = escape(urlsplit(redirect_uri).netloc or redirect_uri)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}}
input{{width:100%;padding:.4rem;margin:.4rem 0 1rem}}button{{padding:.5rem 1rem;margin-right:.5rem}}</style>
</head><body>
<h1>Authorize {name}</h1>
<p><strong>{name}</strong> asks for access to this mcp-orchestrator with the scopes <code>{scopes}</code>,
and will receive it at <code>{target}</code>.</p>
<p>Approve with one of this service's API keys: the client's tasks will belong to that key's name.</p>
<form method="post">
<input type="hidden" name="csrf" value="{escape(csrf)}">
<label for="api_key">API key</label>
<input id="api_key" name="api_key" type="password" autocomplete="current-password" required>
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny" formnovalidate>Deny</button>
</form></body></html>
"""


def init_app(app: Flask, settings: Settings, store: Store, limiter=None) -> BuiltinServer:
    # design: Authlib logs every issued token (access and refresh) at DEBUG; tokens are never
    # logged here, whatever LOG_LEVEL says
    logging.getLogger("authlib").setLevel(logging.INFO)
    bs = BuiltinServer(settings, store)
    if not bs.api_keys:
        log.warning("OAUTH_BUILTIN=1 without API keys: nobody can approve a client on the consent page")
    bs.server.init_app(app)
    bs.server.register_token_generator("default", bs.generate_token)  # init_app installs Authlib's own
    app.extensions["mcp_oauth_server"] = bs
    app.register_blueprint(bp)
    if limiter is not None:
        for endpoint in ("oauth_server.token", "oauth_server.register"):
            app.view_functions[endpoint] = limiter.limit(TOKEN_RATE_LIMIT)(app.view_functions[endpoint])
    return bs
