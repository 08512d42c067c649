"""Rate limits with flask-limiter (DESIGN §10), counted in the store so every worker (and,
with Redis, every host) shares one count.

`RATE_LIMIT_DEFAULT` applies to every route but the health probes; `RATE_LIMIT_ORCHESTRATE`
to starting a task, on REST and MCP alike. Both are per API key, else per client IP
(`TRUSTED_PROXIES` hops of X-Forwarded-For trusted)."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from flask import Flask, g, request
from flask_limiter import HeaderNames, Limiter, RateLimitExceeded
from limits import parse_many
from limits.storage import Storage
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import TooManyRequests, error_response
from .settings import Settings
from .store import Store, open_store

EXEMPT_PATHS = frozenset({"/health", "/health/live"})
SCHEME = "orchestrator-store"
# How long a thread trusts the figures its own last increment returned.
JUST_HIT_SECONDS = 0.05
# design: flask-limiter writes Retry-After on every response it counts, so a plain 200 told
# clients to wait a minute. Its value goes to this internal header, dropped before the
# response leaves; Retry-After is set only by the refusals themselves (429 here, 503s).
LIMITER_RETRY_AFTER = "X-Limiter-Retry-After"


class StoreStorage(Storage):
    """A `limits` storage over the service's store (fixed-window counters)."""

    STORAGE_SCHEME = [f"{SCHEME}+sqlite", f"{SCHEME}+redis"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        # design: `limits` builds storages from a URI; ours wraps the store URL after the scheme.
        self.store: Store = open_store(uri.split("+", 1)[1])
        self._last = threading.local()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (Exception,)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        value, expires = self.store.incr_counter(key, expiry, amount)
        self._last.hit = (key, value, expires, time.monotonic())
        return value

    def _just_hit(self, key: str) -> tuple[int, float] | None:
        """The counter this thread incremented a moment ago: flask-limiter reads it back
        for the X-RateLimit headers right after the hit, and the increment already told us
        both figures, so those two reads need not cost two more store round trips."""
        last = getattr(self._last, "hit", None)
        if last and last[0] == key and time.monotonic() - last[3] < JUST_HIT_SECONDS:
            return last[1], last[2]
        return None

    def get(self, key: str) -> int:
        return (self._just_hit(key) or self.store.get_counter(key))[0]

    def get_expiry(self, key: str) -> float:
        return (self._just_hit(key) or self.store.get_counter(key))[1]

    def check(self) -> bool:
        try:
            self.store.ping()
            return True
        except Exception:  # noqa: BLE001 - `check` answers a yes/no health question
            return False

    def reset(self) -> int | None:
        return self.store.reset_counters()

    def clear(self, key: str) -> None:
        self.store.reset_counters(key)


def drop_limiter_retry_after(response):
    response.headers.pop(LIMITER_RETRY_AFTER, None)
    return response


def rate_key() -> str:
    name = getattr(g, "api_key_name", None)
    return f"key:{name}" if name else f"ip:{request.remote_addr or 'unknown'}"


class RateLimits:
    def __init__(self, app: Flask, settings: Settings):
        self.settings = settings
        self.orchestrate = parse_many(settings.rate_limit_orchestrate)
        # Registered before the limiter, so it runs after the limiter's header hook (Flask runs
        # after_request functions in reverse order).
        app.after_request(drop_limiter_retry_after)
        self.limiter = Limiter(
            rate_key,
            app=app,
            default_limits=[settings.rate_limit_default],
            storage_uri=f"{SCHEME}+{settings.resolved_store_url}",
            strategy="fixed-window",
            headers_enabled=True,
            header_name_mapping={HeaderNames.RETRY_AFTER: LIMITER_RETRY_AFTER},
            enabled=settings.rate_limit_enabled,
        )
        self.limiter.request_filter(lambda: request.path in EXEMPT_PATHS)

    def hit_orchestrate(self, count: int = 1) -> None:
        """Count `count` task starts against RATE_LIMIT_ORCHESTRATE; 429 when over."""
        if not self.settings.rate_limit_enabled or count <= 0:
            return
        key = rate_key()
        for item in self.orchestrate:
            if not self.limiter.limiter.hit(item, "orchestrate", key, cost=count):
                reset_at = self.limiter.limiter.get_window_stats(item, "orchestrate", key).reset_time
                retry = max(1, math.ceil(reset_at - time.time()))
                raise TooManyRequests(f"rate limit exceeded: {item} for starting tasks",
                                      {"limit": str(item)}, headers={"Retry-After": str(retry)})


def init_app(app: Flask, settings: Settings) -> RateLimits:
    if settings.trusted_proxies > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    limits = RateLimits(app, settings)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        current = limits.limiter.current_limit
        # the window's end, rounded up, is never further away than the window itself
        retry = (max(1, min(math.ceil(current.reset_at - time.time()), current.limit.get_expiry()))
                 if current else 60)
        return error_response(429, "rate_limited", f"rate limit exceeded: {exc.description}",
                              {"limit": exc.description}, {"Retry-After": str(retry)})

    return limits
