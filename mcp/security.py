"""API-key authentication (DESIGN §10).

Keys come from `API_KEYS` (comma-separated `name:key` or bare `key`) and `API_KEYS_FILE`
(`name:sha256hex` lines). Only SHA-256 digests are kept in memory and compared in constant
time. The key's name becomes the owner of what the request creates."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path

from flask import Flask, g, request

from .errors import Unauthorized
from .settings import Settings

PUBLIC_PATHS = frozenset({"/health", "/health/live", "/ui"})
# the console's static files hold no data (its API calls carry the key); OAuth discovery
PUBLIC_PREFIXES = ("/.well-known/", "/ui/")


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


def is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def init_app(app: Flask, settings: Settings) -> None:
    keys = load_keys(settings)
    admins = set(key_entries(settings.admin_keys, "admin").values())

    @app.before_request
    def authenticate() -> None:
        g.api_key_name = None
        g.api_key_is_admin = False
        if not keys:
            return
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or request.method == "OPTIONS":
            return
        if path == "/" and request.method in ("GET", "HEAD"):
            return  # service info; POST / is the MCP endpoint and needs a key
        presented = presented_key()
        name = match(keys, presented) if presented else None
        if name is None:
            if path == "/metrics" and is_loopback(request.remote_addr):
                return
            raise Unauthorized("a valid API key is required (X-API-Key or Authorization: Bearer)")
        g.api_key_name = name
        g.api_key_is_admin = name in admins
