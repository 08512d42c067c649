"""OAuth 2.1 for the MCP endpoint and the REST API (DESIGN §13, the MCP "Authorization" spec).

`resource` makes the service a protected resource (RFC 9728 metadata, bearer challenges),
`tokens` checks access tokens against an issuer's keys, `server` is the optional built-in
authorization server (OAUTH_BUILTIN=1) whose state lives in the store."""

from __future__ import annotations

from ..settings import Settings
from ..store import Store
from .resource import ResourceServer
from .tokens import IssuerKeys


def resource_server(settings: Settings, store: Store) -> ResourceServer | None:
    """The token checker for the configured mode: the built-in server's keys in the store,
    an external issuer's JWKS, or None when OAuth is off (API keys only)."""
    if settings.oauth_builtin:
        from .server import StoreKeys

        return ResourceServer(settings, StoreKeys(store, settings.oauth_access_token_ttl_seconds))
    if settings.oauth_issuer:
        return ResourceServer(settings, IssuerKeys(settings.oauth_issuer, client_id=settings.oauth_client_id,
                                                   client_secret=settings.oauth_client_secret))
    return None


def init_builtin_server(app, settings: Settings, store: Store, limiter=None) -> None:
    """OAUTH_BUILTIN=1: the authorization server's routes (mcp.oauth.server); `limiter` (a
    flask-limiter Limiter) puts a tighter limit on the token and registration endpoints."""
    from . import server

    server.init_app(app, settings, store, limiter)
