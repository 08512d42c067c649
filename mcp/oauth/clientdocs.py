"""Client ID metadata documents (MCP 2025-11-25 "Authorization"): a client whose client_id is
an https URL publishes its metadata there, and the built-in server fetches it instead of
asking the client to register.

The fetch goes through the same SSRF guard as `fetch_url` (orchestration.netguard: every
address the name resolves to must be public unless FETCH_ALLOW_PRIVATE=1, the connection
pinned to the vetted address), follows no redirect, reads at most MAX_BYTES, and the
document must name itself as client_id. Fetched documents are kept in the store for an hour."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestration import netguard
from orchestration.fetch import pinned_request

from ..locality import is_loopback_host
from ..store import Store

DOC_KEY = "oauth:client-doc:{}"
DOC_TTL = 3600.0
MAX_BYTES = 65536
TIMEOUT = 5.0


class ClientDocError(Exception):
    """Why a client ID metadata document cannot be used (the message names it)."""


def is_document_id(client_id: str) -> bool:
    """An https URL with a path: the spec's shape of a metadata-document client_id."""
    parts = urlsplit(client_id)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/") and not parts.fragment


class ClientDocuments:
    def __init__(self, store: Store, allow_private: bool, resolver: netguard.Resolver = netguard.resolve,
                 client_factory: Callable[[], httpx.Client] | None = None):
        self.store = store
        self.allow_private = allow_private
        self.resolver = resolver
        self.client_factory = client_factory or (lambda: httpx.Client(timeout=TIMEOUT, follow_redirects=False))

    def metadata(self, client_id: str) -> dict[str, Any]:
        """The document's metadata, from the store or fetched; ClientDocError when unusable."""
        key = DOC_KEY.format(client_id)
        cached = self.store.cache_get(key)
        if cached is not None:
            return json.loads(cached)
        metadata = self.fetch(client_id)
        self.store.cache_set(key, json.dumps(metadata), DOC_TTL)
        return metadata

    def fetch(self, client_id: str) -> dict[str, Any]:
        why, addresses = netguard.vet(client_id, self.allow_private, self.resolver,
                                      " (FETCH_ALLOW_PRIVATE=1 allows it)")
        if why:
            raise ClientDocError(f"client_id {client_id}: {why}")
        with self.client_factory() as client:
            try:
                request = pinned_request(client, client_id, addresses, {"Accept": "application/json"})
                response = client.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise ClientDocError(f"client_id {client_id}: HTTP {response.status_code}")
                    body = b""
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > MAX_BYTES:
                            raise ClientDocError(f"client_id {client_id}: document over {MAX_BYTES} bytes")
                finally:
                    response.close()
            except httpx.HTTPError as exc:
                raise ClientDocError(f"client_id {client_id}: {type(exc).__name__}: {exc}") from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise ClientDocError(f"client_id {client_id}: the document is not JSON") from None
        return validated(client_id, doc)


def loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and is_loopback_host(parts.hostname or "")


def unsafe_redirect(uri: str) -> str | None:
    """Why `uri` may not be a redirect URI, or None: https, http on loopback (RFC 8252 §7.3)
    or a private-use scheme such as `com.example.app:` (§7.1), never with a fragment."""
    parts = urlsplit(uri)
    if parts.fragment:
        return f"{uri!r} has a fragment"
    if parts.scheme == "https" or loopback_redirect(uri) or (parts.scheme not in ("http", "javascript", "data", "file")
                                                            and "." in parts.scheme):
        return None
    return f"{uri!r} must be https, http on loopback, or a private-use scheme"


def validated(client_id: str, doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ClientDocError(f"client_id {client_id}: the document is not a JSON object")
    if doc.get("client_id") != client_id:
        raise ClientDocError(f"client_id {client_id}: the document names another client_id")
    uris = doc.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise ClientDocError(f"client_id {client_id}: redirect_uris must be a non-empty list of URIs")
    for uri in uris:
        if unsafe_redirect(uri):
            raise ClientDocError(f"client_id {client_id}: redirect_uris: {unsafe_redirect(uri)}")
    if doc.get("token_endpoint_auth_method", "none") != "none" or "client_secret" in doc:
        raise ClientDocError(f"client_id {client_id}: a metadata-document client is public "
                             "(token_endpoint_auth_method none, no secret)")
    return {"client_name": str(doc.get("client_name") or client_id), "redirect_uris": uris,
            "token_endpoint_auth_method": "none", "grant_types": doc.get("grant_types") or
            ["authorization_code", "refresh_token"], "response_types": ["code"],
            **({"scope": doc["scope"]} if isinstance(doc.get("scope"), str) else {})}
