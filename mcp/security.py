"""Authentication: API keys (DESIGN §10) and OAuth access tokens (DESIGN §13).

Keys come from `API_KEYS` (comma-separated `name:key` or bare `key`) and `API_KEYS_FILE`
(`name:sha256hex` lines). Only SHA-256 digests are kept in memory and compared in constant
time. The key's name becomes the owner of what the request creates. With OAuth configured,
a bearer value that is no key is checked as an access token (mcp.oauth); its subject owns
tasks as a key name does, and its scopes limit what it may do (`require_scopes`)."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from flask import Flask, g, request

from .errors import Forbidden, Misdirected, Unauthorized
from .locality import is_forwarded, is_local, is_loopback_host
from .oauth.resource import ResourceServer, challenge
from .oauth.tokens import TokenError
from .settings import Settings

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/health", "/health/live", "/ui"})
# OAuth discovery's JSON 404s; the console's static files, which hold no data (its API calls
# carry the key, and a browser must load the page before it can ask for one)
PUBLIC_PREFIXES = ("/.well-known/", "/oauth/", "/ui/")
NO_KEYS_MESSAGE = (
    "this service has no API keys configured, so it only serves local clients (loopback, straight to "
    "the service, not through a proxy). To serve this client, set API_KEYS (name:key,...) or "
    "API_KEYS_FILE (name:sha256hex lines), restart, and send the key as X-API-Key or Authorization: Bearer")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_entries(entries: tuple[str, ...], unnamed: str) -> dict[str, str]:
    """`name:key` or bare `key` entries -> {sha256 hex digest: name}."""
    keys: dict[str, str] = {}
    for n, entry in enumerate(entries, start=1):
        name, sep, key = entry.partition(":")
        name, key = (name, key) if sep and key else (f"{unnamed}{n}", entry)
        keys[digest(key)] = name
    return keys


def load_keys(settings: Settings) -> dict[str, str]:
    """sha256 hex digest -> key name, admin keys included (they are keys like the others)."""
    keys = key_entries(settings.api_keys, "key")
    keys.update(key_entries(settings.admin_keys, "admin"))
    if settings.api_keys_file:
        for line in Path(settings.api_keys_file).read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, hexdigest = line.partition(":")
            if len(hexdigest) != 64:
                raise ValueError(f"API_KEYS_FILE: line for {name!r} is not name:sha256hex")
            keys[hexdigest.lower()] = name
    return keys


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    return bearer_token()


def match(keys: dict[str, str], presented: str) -> str | None:
    """The key's name, comparing against every digest in constant time."""
    wanted = digest(presented)
    found = None
    for hexdigest, name in keys.items():
        if hmac.compare_digest(hexdigest, wanted):
            found = name
    return found


def is_public(path: str, method: str) -> bool:
    """Routes every client may call: service info, health probes, OAuth discovery (JSON 404s
    without OAuth), the built-in authorization server's endpoints, the console's static files
    and CORS preflights. POST / is the MCP endpoint and is not public."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or method == "OPTIONS":
        return True
    return path == "/" and method in ("GET", "HEAD")


class InsufficientScope(Forbidden):
    code = "insufficient_scope"


# design: a token needs `read` for everything but these views, which ask for the scope the
# operation needs (starting or cancelling a task: `orchestrate`) themselves.
VIEWS_CHECKING_SCOPE = frozenset({"tools.call_tool", "tasks.cancel_task", "mcp_http.post", "legacy_sse.post_message"})


def require_scopes(settings: Settings, *scopes: str) -> None:
    """403 insufficient_scope when the request's access token lacks one of `scopes`; requests
    authenticated by an API key (or local keyless ones) hold every scope."""
    held = getattr(g, "oauth_scopes", None)
    missing = sorted(set(scopes) - held) if held is not None else []
    if missing:
        wanted = " ".join(sorted(set(scopes)))
        raise InsufficientScope(f"the access token lacks the scope {' '.join(missing)}",
                                {"required_scopes": sorted(set(scopes)), "missing": missing},
                                headers={"WWW-Authenticate": challenge(settings, "insufficient_scope",
                                                                       f"requires scope {wanted}", wanted)})


def init_app(app: Flask, settings: Settings, oauth: ResourceServer | None = None) -> None:
    keys = load_keys(settings)
    admins = set(key_entries(settings.admin_keys, "admin").values())

    def token_owner(server: ResourceServer, token: str) -> None:
        try:
            principal = server.authenticate(token)
        except TokenError as exc:
            log.info("refused an access token: %s", exc.description)  # design: never the token itself
            raise Unauthorized(f"the access token was refused: {exc.description}", details={"error": exc.error},
                               headers={"WWW-Authenticate": challenge(settings, exc.error, exc.description)}) from None
        g.api_key_name = principal.subject
        g.oauth_scopes = principal.scopes
        g.oauth_client_id = principal.client_id
        if request.endpoint not in VIEWS_CHECKING_SCOPE:
            require_scopes(settings, "read")

    @app.before_request
    def authenticate() -> None:
        g.api_key_name = None
        g.api_key_is_admin = False
        g.oauth_scopes = None
        if is_public(request.path, request.method):
            return
        if not keys and oauth is None:
            # design: "no keys" means "local only"; behind a proxy on this host every peer is
            # loopback, so the request itself must be local (mcp.locality), not its socket.
            if not is_local():
                if not is_loopback_host(request.host) and not is_forwarded():
                    # a foreign Host sent straight here: DNS rebinding, answered as on the MCP endpoint
                    raise Misdirected(f"host {request.host} is not served here")
                log.info("refused a non-local request: no API keys configured")
                raise Unauthorized(NO_KEYS_MESSAGE, details={"reason": "no_api_keys_configured",
                                                             "settings": ["API_KEYS", "API_KEYS_FILE"]})
            return
        presented = presented_key()
        name = match(keys, presented) if presented and keys else None
        if name is None and oauth is not None and "X-API-Key" not in request.headers and bearer_token():
            return token_owner(oauth, bearer_token() or "")
        if name is None:
            if request.path == "/metrics" and is_local():
                return
            log.info("refused a request without a valid API key")
            wanted = "an API key (X-API-Key) or an OAuth access token" if oauth else "a valid API key"
            raise Unauthorized(f"{wanted} is required (X-API-Key or Authorization: Bearer)")
        g.api_key_name = name
        g.api_key_is_admin = name in admins

    if oauth is not None:
        @app.after_request
        def resource_metadata_challenge(response):
            # every 401 names this resource's metadata, whichever part raised it (RFC 9728 §5.1)
            # (the authorization server's own 401s, invalid_client at /oauth/*, are not the resource's)
            if (response.status_code == 401 and not request.path.startswith("/oauth/")
                    and "resource_metadata" not in response.headers.get("WWW-Authenticate", "")):
                response.headers["WWW-Authenticate"] = challenge(settings)
            return response
