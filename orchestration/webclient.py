"""Outbound HTTP for search sources: one shared `httpx.AsyncClient` per event loop, timeouts,
bounded retries, a descriptive User-Agent, per-source politeness intervals and a
short-lived response cache (CONVENTIONS 6: all of it passed in, none of it global)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from . import safejson
from .errors import SourceError
from .interfaces import SearchSource

DEFAULT_USER_AGENT = "mcp-orchestrator (research orchestrator; search sources)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 10.0


class ResponseCache(Protocol):
    """Where API answers are kept for a short while (the store, or process memory)."""

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...


class MemoryCache:
    """A per-process TTL cache; the fallback when no store-backed cache is given."""

    def __init__(self, max_entries: int = 512):
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    async def get(self, key: str) -> str | None:
        with self._lock:
            item = self._items.get(key)
            if item and item[0] > time.monotonic():
                return item[1]
            self._items.pop(key, None)
            return None

    async def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            if len(self._items) >= self.max_entries:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (time.monotonic() + ttl, value)


class HttpClients:
    """One AsyncClient per event loop: an httpx client binds its connections to the loop
    it first ran on, and a worker runs orchestrations on its own loop."""

    def __init__(self, user_agent: str = DEFAULT_USER_AGENT, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.user_agent = user_agent
        self.timeout = timeout
        self.transport = transport
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                client = httpx.AsyncClient(
                    headers={"User-Agent": self.user_agent}, timeout=httpx.Timeout(self.timeout),
                    follow_redirects=True, transport=self.transport,
                    limits=httpx.Limits(max_connections=50, max_keepalive_connections=20))
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close the client of the running loop."""
        with self._lock:
            client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


class Politeness:
    """At least `interval` seconds between the starts of two requests to one API, across
    every loop of this process (arXiv asks for 3 s). Each worker process keeps its own."""

    def __init__(self, interval: float):
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    async def wait(self) -> None:
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def kind(value: Any) -> str:
    """A JSON value's type in JSON's words, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


class RetryableStatus(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (RetryableStatus, httpx.TransportError))


class HttpSource(SearchSource):
    """A search source behind an HTTP API. Subclasses build the request and parse the
    answer; this class fetches it politely, retries what is worth retrying, and caches."""

    default_interval: float = 0.0
    setting: str = ""  # the variable that enables the source, named when it is disabled
    public_url: str = ""  # the public API an operator would point it at

    def __init__(self, base_url: str, *, http: HttpClients | None = None, cache: ResponseCache | None = None,
                 timeout: float = 10.0, attempts: int = 3, retry_wait: float = 0.5,
                 min_interval: float | None = None, cache_ttl: float = 300.0, disabled_reason: str | None = None):
        self.base_url = base_url.rstrip("/") if base_url else ""
        self.http = http or HttpClients(timeout=timeout)
        self.cache = cache if cache is not None else MemoryCache()
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self.cache_ttl = cache_ttl
        self.politeness = Politeness(self.default_interval if min_interval is None else min_interval)
        self._inflight: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[str]] = {}
        self.enabled = bool(self.base_url) and disabled_reason is None
        self.disabled_reason = disabled_reason if disabled_reason or self.base_url else (
            f"not configured: set {self.setting or 'its API URL'}"
            + (f" (public API: {self.public_url})" if self.public_url else ""))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.base_url or None,
                "min_interval_seconds": self.politeness.interval}

    async def get_text(self, url: str, params: dict[str, Any] | None = None,
                       headers: dict[str, str] | None = None, check: Callable[[str], Any] | None = None) -> str:
        """The body of a GET, from the cache when fresh. Raises SourceError when the API
        fails after the allowed retries, or when `check` (which raises SourceError for an
        answer that is not what the API documents) refuses the body: such a body is not cached."""
        key = "src:" + hashlib.sha256(json.dumps([self.name, url, sorted((params or {}).items())],
                                                 default=str).encode()).hexdigest()
        cached = await self.cache.get(key) if self.cache_ttl > 0 else None
        if cached is not None:
            return cached
        # design: agents of one search often ask the same thing at the same moment; they
        # share one request (per loop) instead of all missing the cache together.
        flight = (asyncio.get_running_loop(), key)
        if flight not in self._inflight:
            self._inflight[flight] = asyncio.ensure_future(self._fetch(key, url, params, headers, check))
            self._inflight[flight].add_done_callback(lambda _: self._inflight.pop(flight, None))
        return await asyncio.shield(self._inflight[flight])

    async def _fetch(self, key: str, url: str, params: dict[str, Any] | None,
                     headers: dict[str, str] | None, check: Callable[[str], Any] | None) -> str:
        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.attempts), wait=self._wait,
                                               retry=retry_if_exception(_retryable), reraise=True):
                with attempt:
                    await self.politeness.wait()
                    response = await self.http.client().get(url, params=params, headers=headers,
                                                            timeout=self.timeout)
                    if response.status_code in RETRY_STATUSES:
                        raise RetryableStatus(response)
        except RetryableStatus as exc:
            raise SourceError(f"{self.name}: {exc} after {self.attempts} attempts") from None
        except httpx.TimeoutException:
            raise SourceError(f"{self.name}: timed out after {self.timeout:g} s "
                              f"({self.attempts} attempts)") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise SourceError(f"{self.name}: HTTP {response.status_code}: {response.text[:200]}")
        if check is not None:
            check(response.text)
        if self.cache_ttl > 0:
            await self.cache.set(key, response.text, self.cache_ttl)
        return response.text

    async def get_json(self, url: str, params: dict[str, Any] | None = None,
                       headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The JSON object a GET answers. SourceError when the body is not JSON (an HTML
        error page, a body cut off) or not an object."""
        return self.json_object(await self.get_text(url, params, headers, check=self.json_object))

    def json_object(self, text: str) -> dict[str, Any]:
        try:
            data = safejson.loads(text)
        except ValueError as exc:
            if text.lstrip()[:1] == "<":
                raise self.unexpected(f"an HTML or XML page, not JSON: {text.strip()[:120]!r}") from None
            raise self.unexpected(f"not JSON, or JSON cut off ({exc})") from None
        if not isinstance(data, dict):
            raise self.unexpected(f"{kind(data)}, not a JSON object")
        return data

    def unexpected(self, problem: str) -> SourceError:
        """The error of an answer that is not what the API documents."""
        return SourceError(f"{self.name}: unexpected answer: {problem}")

    def answer_list(self, data: dict[str, Any], *path: str) -> list[dict[str, Any]]:
        """The list of result objects at `path` in a JSON answer; an absent key or null is no
        results (APIs leave the key out when nothing matched), any other shape a SourceError
        naming where it went wrong."""
        node: Any = data
        for depth, key in enumerate(path):
            if not isinstance(node, dict):
                where = ".".join(path[:depth])
                raise self.unexpected(f"`{where}` is {kind(node)}, not an object")
            node = node.get(key)
            if node is None:
                return []
        where = ".".join(path)
        if not isinstance(node, list):
            raise self.unexpected(f"`{where}` is {kind(node)}, not a list")
        odd = next((item for item in node if not isinstance(item, dict)), None)
        if odd is not None:
            raise self.unexpected(f"`{where}` holds {kind(odd)}, not objects")
        return node

    def _wait(self, state: Any) -> float:
        """Exponential backoff from `retry_wait`, or the server's Retry-After when longer (capped)."""
        delay = self.retry_wait * 2 ** (state.attempt_number - 1)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatus):
            try:
                delay = max(delay, min(float(exc.response.headers.get("Retry-After", 0)), MAX_RETRY_AFTER))
            except ValueError:
                pass
        return delay

    async def aclose(self) -> None:
        await self.http.aclose()
