"""Reading one web page: fetched with a size and time cap, text-like content types only,
every hop (the first URL and each redirect) vetted by orchestration.netguard after DNS
resolution, the connection pinned to the vetted address, and the main text extracted
with trafilatura.

The resolver and the HTTP transport are parameters: tests hand in a resolver that
returns private addresses and a transport that fails if it is ever called."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from . import netguard
from .errors import OrchestrationError
from .netguard import Resolver
from .webclient import DEFAULT_USER_AGENT

TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/markdown", "text/xml", "application/xml",
              "application/json", "text/csv")
MAX_REDIRECTS = 5


class FetchRefused(OrchestrationError):
    """The URL (or a redirect) may not be fetched: a non-public address, a scheme, a type."""


class FetchFailed(OrchestrationError):
    """The page could not be read (network error, timeout, HTTP error)."""


@dataclass
class Page:
    url: str  # after redirects
    status: int
    content_type: str
    title: str
    text: str
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)


def extract(body: str, content_type: str, url: str) -> tuple[str, str]:
    """(title, main text) of a document; HTML goes through trafilatura, the rest is kept."""
    if content_type not in ("text/html", "application/xhtml+xml"):
        return "", body.strip()
    import trafilatura  # design: heavy import (lxml, dateparser), paid only by the first page read

    text = trafilatura.extract(body, url=url, include_comments=False, include_tables=True, favor_precision=True)
    metadata = trafilatura.extract_metadata(body, default_url=url)
    title = (metadata.title if metadata and metadata.title else "") or ""
    return title, (text or "").strip()


def pinned_request(client: httpx.Client | httpx.AsyncClient, url: str, addresses: list[str],
                   headers: dict[str, str] | None = None) -> httpx.Request:
    """A GET of `url` that connects to the vetted address itself, so a second DNS answer
    (rebinding) cannot send it elsewhere; Host and TLS SNI keep the name."""
    if not addresses:
        return client.build_request("GET", url, headers=headers)
    parts = urlsplit(url)
    ip = ipaddress.ip_address(addresses[0].split("%", 1)[0])
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = f"{host}:{parts.port}" if parts.port else host
    host_header = parts.hostname if not parts.port else f"{parts.hostname}:{parts.port}"
    if ":" in (parts.hostname or "") and not host_header.startswith("["):
        host_header = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    return client.build_request("GET", urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
                                headers={**(headers or {}), "Host": host_header},
                                extensions={"sni_hostname": parts.hostname})


class PageFetcher:
    def __init__(self, allow_private: bool = False, resolver: Resolver = netguard.resolve,
                 transport: httpx.AsyncBaseTransport | None = None, user_agent: str = DEFAULT_USER_AGENT,
                 timeout: float = 15.0, max_bytes: int = 2_000_000, max_chars: int = 100_000):
        self.allow_private = allow_private
        self.resolver = resolver
        self.transport = transport
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_chars = max_chars

    async def fetch(self, url: str) -> Page:
        """The page at `url`; FetchRefused or FetchFailed when it cannot be had."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url)
        except TimeoutError:
            raise FetchFailed(f"{url}: no complete answer within {self.timeout:g} s") from None

    async def _fetch(self, url: str) -> Page:
        redirects: list[str] = []
        async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout, follow_redirects=False,
                                     headers={"User-Agent": self.user_agent,
                                              "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"}
                                     ) as client:
            for _ in range(MAX_REDIRECTS + 1):
                # design: resolving blocks (getaddrinfo); off the loop, which every task shares.
                why, addresses = await asyncio.to_thread(netguard.vet, url, self.allow_private, self.resolver,
                                                         " (FETCH_ALLOW_PRIVATE=1 allows it)")
                if why:
                    raise FetchRefused(f"{url}: {why}")
                request = pinned_request(client, url, addresses)
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from None
                try:
                    if response.is_redirect and response.headers.get("Location"):
                        url = urljoin(url, response.headers["Location"])
                        redirects.append(url)
                        continue
                    return await self._read(url, response, redirects)
                finally:
                    await response.aclose()
        raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")

    async def _read(self, url: str, response: httpx.Response, redirects: list[str]) -> Page:
        if response.status_code >= 400:
            raise FetchFailed(f"{url}: HTTP {response.status_code}")
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type not in TEXT_TYPES:
            raise FetchRefused(f"{url}: content type {content_type or 'unknown'!r} is not text-like")
        chunks, size, truncated = [], 0, False
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= self.max_bytes:
                truncated = True
                break
        raw = b"".join(chunks)[:self.max_bytes]
        body = raw.decode(response.encoding or "utf-8", errors="replace")
        title, text = await asyncio.to_thread(extract, body, content_type, url)
        if len(text) > self.max_chars:
            text, truncated = text[:self.max_chars], True
        return Page(url=url, status=response.status_code, content_type=content_type, title=title, text=text,
                    truncated=truncated, redirects=redirects)

    def to_dict(self, page: Page) -> dict[str, Any]:
        return {"url": page.url, "status": page.status, "content_type": page.content_type, "title": page.title,
                "text": page.text, "chars": len(page.text), "truncated": page.truncated, "redirects": page.redirects}
