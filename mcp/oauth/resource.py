"""The service as an OAuth 2.1 protected resource (RFC 9728, RFC 6750).

Public URLs are built from the request as clients see it: behind a trusted proxy
(TRUSTED_PROXIES > 0) from X-Forwarded-Proto/-Host, with the public prefix
(X-Forwarded-Prefix or PUBLIC_BASE_PATH). The resource is the MCP endpoint's URL: `/mcp`
straight to the service, the prefix itself behind Caddy (`https://<host>/mcp`, which the
proxy maps to the app's `/`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask import Blueprint, jsonify, request

from ..errors import NotFound
from ..http import public_prefix
from ..services import services
from ..settings import Settings
from .tokens import KeySource, Principal, verify

bp = Blueprint("oauth_resource", __name__)
REALM = "mcp-orchestrator"
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")
METADATA_PATH = "/.well-known/oauth-protected-resource"


def origin(settings: Settings) -> str:
    """scheme://host the client used."""
    scheme, host = request.scheme, request.host
    if settings.trusted_proxies > 0:
        scheme = request.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    scheme = scheme if scheme in ("http", "https") else "http"
    return f"{scheme}://{host if HOST_PATTERN.match(host) else 'localhost'}"


def base_url(settings: Settings) -> str:
    """The service's public root: origin and prefix (the built-in server's issuer)."""
    return origin(settings) + public_prefix(settings)


def resource_url(settings: Settings) -> str:
    prefix = public_prefix(settings)
    return origin(settings) + (prefix or "/mcp")


def metadata_url(settings: Settings) -> str:
    """Where this resource's metadata is, reachable through the proxy's prefix."""
    prefix = public_prefix(settings)
    return f"{origin(settings)}{prefix}{METADATA_PATH}" + ("" if prefix else "/mcp")


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "").replace('"', "'") + '"'


def challenge(settings: Settings, error: str | None = None, description: str | None = None,
              scope: str | None = None) -> str:
    """The WWW-Authenticate value: RFC 6750's Bearer with RFC 9728's resource_metadata."""
    params = [("realm", REALM), ("resource_metadata", metadata_url(settings)),
              ("scope", scope or " ".join(settings.oauth_scope_list))]
    if error:
        params.append(("error", error))
    if description:
        params.append(("error_description", description))
    return "Bearer " + ", ".join(f"{k}={quoted(v)}" for k, v in params)


@dataclass
class ResourceServer:
    """Checks access tokens for this resource against one issuer's keys."""

    settings: Settings
    keys: KeySource

    def issuer(self) -> str:
        return self.settings.oauth_issuer or base_url(self.settings)

    def audiences(self) -> list[str]:
        return [self.settings.oauth_audience] if self.settings.oauth_audience else [resource_url(self.settings)]

    def authenticate(self, token: str) -> Principal:
        return verify(token, self.keys, self.issuer(), self.audiences())


def open_to_browsers(response):
    """Discovery, registration and token endpoints answer any origin without credentials, so
    browser-based MCP clients (the Inspector) can run the flow; CORS_ORIGINS governs the rest."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, MCP-Protocol-Version"
    response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    return response


bp.after_request(open_to_browsers)


@bp.get(METADATA_PATH)
@bp.get(METADATA_PATH + "/mcp")
def protected_resource_metadata():
    svc = services()
    server: ResourceServer | None = svc.oauth
    if server is None:
        raise NotFound("OAuth is not configured on this service: send an API key (X-API-Key)")
    settings = svc.settings
    return jsonify({
        "resource": resource_url(settings),
        "authorization_servers": [server.issuer()],
        "scopes_supported": list(settings.oauth_scope_list),
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-orchestrator",
    })
