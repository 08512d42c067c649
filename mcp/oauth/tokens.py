"""Access-token checks: a JWT signed by a key of the issuer's JWKS, naming this resource.

Checks signature, `iss`, `aud` (RFC 8707: the token was asked for this resource), `exp`,
`nbf` and the scopes; failures are `TokenError`s carrying the RFC 6750 error code. Keys come
from a `KeySource`: the issuer's JWKS fetched over HTTP (external issuer) or the built-in
server's keys in the store; either is refreshed when a token names a key it does not know."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..errors import Unavailable

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY = 30  # seconds of clock skew allowed on exp/nbf
FETCH_TIMEOUT = 5.0
METADATA_TTL = 3600.0
JWKS_TTL = 600.0
FORCED_REFRESH_INTERVAL = 10.0  # an unknown kid refetches the JWKS at most this often
INTROSPECTION_CACHE = 60.0
INTROSPECTION_CACHE_SIZE = 10000


class TokenError(Exception):
    """A token refused: `error` is the RFC 6750 code (invalid_token, insufficient_scope)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    client_id: str | None
    expires_at: float


class KeySource(Protocol):
    def key_set(self, refresh: bool = False) -> KeySet: ...


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """`scope` (a space-separated string, RFC 9068) or `scp` (a list, as Entra ID and Okta send)."""
    scope = claims.get("scope", claims.get("scp", ""))
    items = scope.split() if isinstance(scope, str) else scope if isinstance(scope, list) else []
    return frozenset(str(s) for s in items)


def has_kid(keys: KeySet, kid: str | None) -> bool:
    if kid is None:
        return len(keys.keys) > 0
    return any(k.kid == kid for k in keys.keys)


def verify(token: str, source: KeySource, issuer: str, audiences: list[str]) -> Principal:
    """The principal of a valid token; TokenError("invalid_token", why) otherwise. A token
    that is no JWT goes to the issuer's introspection endpoint when the source offers one."""
    try:
        header = jws.extract_compact(token.encode()).protected
    except (JoseError, ValueError, UnicodeError):
        introspect = getattr(source, "introspect", None)
        if introspect is None:
            raise TokenError("invalid_token", "the access token is not a JWT") from None
        claims = introspect(token)
        if claims.get("active") is not True:
            raise TokenError("invalid_token", "the authorization server reports the token inactive")
        return principal(claims, issuer, audiences, issuer_required=False)
    if header.get("alg") not in ALGORITHMS:
        raise TokenError("invalid_token", f"signing algorithm {header.get('alg')!r} is not accepted")
    kid = header.get("kid")
    keys = source.key_set()
    if not has_kid(keys, kid):
        keys = source.key_set(refresh=True)  # the issuer may have rotated its keys
        if not has_kid(keys, kid):
            raise TokenError("invalid_token", "the token is signed with an unknown key")
    try:
        decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise TokenError("invalid_token", f"bad signature or malformed token ({type(exc).__name__})") from None
    return principal(decoded.claims, issuer, audiences)


def principal(claims: dict[str, Any], issuer: str, audiences: list[str], issuer_required: bool = True) -> Principal:
    """Checks iss, aud, exp, nbf and sub of verified claims (a JWT's, or an introspection's,
    where RFC 7662 makes iss optional)."""
    now = time.time()
    if claims.get("iss") != issuer and (issuer_required or "iss" in claims):
        raise TokenError("invalid_token", "the token was issued by another authorization server")
    aud = claims.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(a in named for a in audiences):
        raise TokenError("invalid_token", "the token is meant for another resource (aud)")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp + LEEWAY < now:
        raise TokenError("invalid_token", "the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, (int, float)) or nbf - LEEWAY > now):
        raise TokenError("invalid_token", "the token is not valid yet (nbf)")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise TokenError("invalid_token", "the token names no subject (sub)")
    client_id = claims.get("client_id", claims.get("azp"))
    return Principal(subject, token_scopes(claims), str(client_id) if client_id else None, float(exp))


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be: RFC 8414 (path inserted), then OpenID Connect Discovery
    (path appended, as Keycloak and Auth0 serve it)."""
    parts = urlsplit(issuer)
    base, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    return [f"{base}/.well-known/oauth-authorization-server{path}",
            f"{base}{path}/.well-known/openid-configuration"]


class IssuerKeys:
    """An external issuer's metadata and JWKS, fetched over HTTP and cached per process."""

    def __init__(self, issuer: str, client: httpx.Client | None = None, client_id: str = "",
                 client_secret: str = ""):
        self.issuer = issuer
        self.credentials = (client_id, client_secret) if client_id else None
        self._introspected: dict[str, tuple[float, dict[str, Any]]] = {}
        self.client = client or httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False)
        self.lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._forced_at = 0.0

    def _get_json(self, url: str) -> dict[str, Any]:
        response = self.client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return body

    def metadata(self) -> dict[str, Any]:
        with self.lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL:
                errors = []
                for url in metadata_urls(self.issuer):
                    try:
                        body = self._get_json(url)
                    except (httpx.HTTPError, ValueError) as exc:
                        errors.append(f"{url}: {exc}")
                        continue
                    if body.get("issuer") != self.issuer:
                        errors.append(f"{url}: names issuer {body.get('issuer')!r}")
                        continue
                    self._metadata, self._metadata_at = body, time.monotonic()
                    break
                else:
                    raise Unavailable("the authorization server's metadata could not be read",
                                      {"issuer": self.issuer, "tried": errors})
            return self._metadata

    def key_set(self, refresh: bool = False) -> KeySet:
        jwks_uri = self.metadata().get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise Unavailable("the authorization server's metadata names no jwks_uri", {"issuer": self.issuer})
        with self.lock:
            now = time.monotonic()
            stale = self._keys is None or now - self._keys_at > JWKS_TTL
            forced = refresh and now - self._forced_at > FORCED_REFRESH_INTERVAL
            if stale or forced:
                try:
                    keys = KeySet.import_key_set(self._get_json(jwks_uri))
                except (httpx.HTTPError, ValueError, JoseError) as exc:
                    if self._keys is None:
                        raise Unavailable("the authorization server's keys could not be read",
                                          {"jwks_uri": jwks_uri, "reason": str(exc)}) from None
                else:
                    self._keys, self._keys_at = keys, now
                if forced:
                    self._forced_at = now
            assert self._keys is not None
            return self._keys

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: what the issuer says of an opaque token, asked with this resource's
        client credentials (OAUTH_CLIENT_ID/SECRET) and kept for a minute at most (never past
        the token's expiry), so a busy client costs the issuer one call a minute."""
        endpoint = self.metadata().get("introspection_endpoint")
        if not isinstance(endpoint, str) or self.credentials is None:
            raise TokenError("invalid_token", "the access token is not a JWT, and this service cannot introspect "
                                              "tokens (the issuer offers no introspection_endpoint, or "
                                              "OAUTH_CLIENT_ID is not set)")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.time()
        with self.lock:
            cached = self._introspected.get(key)
            if cached and cached[0] > now:
                return cached[1]
            if len(self._introspected) > INTROSPECTION_CACHE_SIZE:
                self._introspected = {k: v for k, v in self._introspected.items() if v[0] > now}
        try:
            response = self.client.post(endpoint, data={"token": token, "token_type_hint": "access_token"},
                                        auth=self.credentials, headers={"Accept": "application/json"})
            response.raise_for_status()
            claims = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable("the authorization server's introspection failed",
                              {"introspection_endpoint": endpoint, "reason": str(exc)}) from None
        if not isinstance(claims, dict):
            raise Unavailable("the authorization server's introspection answered no JSON object",
                              {"introspection_endpoint": endpoint})
        exp = claims.get("exp") if isinstance(claims.get("exp"), (int, float)) else now
        with self.lock:
            self._introspected[key] = (min(now + INTROSPECTION_CACHE, exp), claims)
        return claims
