"""API-key authentication (DESIGN §10).

Keys come from `API_KEYS` (comma-separated `name:key` or bare `key`) and `API_KEYS_FILE`
(`name:sha256hex` lines). Only SHA-256 digests are kept in memory and compared in constant
time. The key's name becomes the owner of what the request creates."""

from __future__ import annotations

import hashlib
import hmac
import logging
from pathlib import Path

from flask import Flask, g, request

from .errors import Misdirected, Unauthorized
from .locality import is_forwarded, is_local, is_loopback_host
from .settings import Settings

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset({"/health", "/health/live", "/ui"})
# OAuth discovery's JSON 404s; the console's static files, which hold no data (its API calls
# carry the key, and a browser must load the page before it can ask for one)
PUBLIC_PREFIXES = ("/.well-known/", "/ui/")
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


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def match(keys: dict[str, str], presented: str) -> str | None:
    """The key's name, comparing against every digest in constant time."""
    wanted = digest(presented)
    found = None
    for hexdigest, name in keys.items():
        if hmac.compare_digest(hexdigest, wanted):
            found = name
    return found


def is_public(path: str, method: str) -> bool:
    """Routes every client may call: service info, health probes, OAuth discovery's JSON 404s
    and CORS preflights. POST / is the MCP endpoint and is not public."""
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or method == "OPTIONS":
        return True
    return path == "/" and method in ("GET", "HEAD")


def init_app(app: Flask, settings: Settings) -> None:
    keys = load_keys(settings)
    admins = set(key_entries(settings.admin_keys, "admin").values())

    @app.before_request
    def authenticate() -> None:
        g.api_key_name = None
        g.api_key_is_admin = False
        if is_public(request.path, request.method):
            return
        if not keys:
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
        name = match(keys, presented) if presented else None
        if name is None:
            if request.path == "/metrics" and is_local():
                return
            log.info("refused a request without a valid API key")
            raise Unauthorized("a valid API key is required (X-API-Key or Authorization: Bearer)")
        g.api_key_name = name
        g.api_key_is_admin = name in admins
