"""Rate limits with flask-limiter (DESIGN §10), counted in the store so every worker (and,
with Redis, every host) shares one count.

`RATE_LIMIT_DEFAULT` applies to every route but the health probes; `RATE_LIMIT_ORCHESTRATE`
to starting a task, on REST and MCP alike. Both are per API key, else per client address
(mcp.locality: `TRUSTED_PROXIES` hops of X-Forwarded-For trusted)."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from flask import Flask, g, has_request_context, request
from flask_limiter import HeaderNames, Limiter, RateLimitExceeded
from limits import parse_many
from limits.storage import Storage

from . import metrics
from .alerts import Alerts
from .errors import TooManyRequests, error_response
from .locality import client_address
from .settings import Settings
from .store import Store, open_store

log = logging.getLogger(__name__)

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


class Breaches:
    """Rate-limit breaches told once per key, limit and window (issue 16), not once per
    refused request: a counter, a log line and an alert for the first 429 of each window.
    The window's first breach is decided in the store, so all workers and hosts agree."""

    KEY = "breach:{}:{}"

    def __init__(self, store: Store, alerts: Alerts):
        self.store = store
        self.alerts = alerts

    def record(self, key: str, limit: Any) -> None:
        try:
            first, _ = self.store.incr_counter(self.KEY.format(key, limit), max(1, int(limit.get_expiry())))
        except self.store.unavailable_errors:
            return  # the 429 still goes out; the breach is not told while the store is away
        if first != 1:
            return
        kind, _, who = key.partition(":")
        # design: the metric's label is the key's name, or `anonymous` for all keyless clients,
        # so an attacker rotating addresses cannot grow the series without bound
        label = who if kind == "key" else "anonymous"
        metrics.RATE_LIMIT_BREACHES.labels(label, str(limit)).inc()
        details = {"key": label, "client": who if kind == "ip" else None, "limit": str(limit),
                   "path": request.path if has_request_context() else None}
        log.warning("rate limit breached: %s by %s", limit, label, extra={"breach": details})
        self.alerts.notify("rate_limit_breach", details)


class RateLimits:
    def __init__(self, app: Flask, settings: Settings, breaches: Breaches | None = None):
        self.settings = settings
        self.breaches = breaches
        self.orchestrate = parse_many(settings.rate_limit_orchestrate)
        # Registered before the limiter, so it runs after the limiter's header hook (Flask runs
        # after_request functions in reverse order).
        app.after_request(drop_limiter_retry_after)
        self.limiter = Limiter(
            self.rate_key,
            app=app,
            default_limits=[settings.rate_limit_default],
            storage_uri=f"{SCHEME}+{settings.resolved_store_url}",
            strategy="fixed-window",
            headers_enabled=True,
            header_name_mapping={HeaderNames.RETRY_AFTER: LIMITER_RETRY_AFTER},
            enabled=settings.rate_limit_enabled,
        )
        self.limiter.request_filter(lambda: request.path in EXEMPT_PATHS)

    def rate_key(self) -> str:
        name = getattr(g, "api_key_name", None)
        return f"key:{name}" if name else f"ip:{client_address(self.settings)}"

    def hit_orchestrate(self, count: int = 1) -> None:
        """Count `count` task starts against RATE_LIMIT_ORCHESTRATE; 429 when over."""
        if not self.settings.rate_limit_enabled or count <= 0:
            return
        key = self.rate_key()
        for item in self.orchestrate:
            if not self.limiter.limiter.hit(item, "orchestrate", key, cost=count):
                if self.breaches is not None:
                    self.breaches.record(key, item)
                reset_at = self.limiter.limiter.get_window_stats(item, "orchestrate", key).reset_time
                retry = max(1, math.ceil(reset_at - time.time()))
                raise TooManyRequests(f"rate limit exceeded: {item} for starting tasks",
                                      {"limit": str(item)}, headers={"Retry-After": str(retry)})


def init_app(app: Flask, settings: Settings, store: Store | None = None, alerts: Alerts | None = None) -> RateLimits:
    limits = RateLimits(app, settings, Breaches(store, alerts) if store is not None and alerts is not None else None)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        current = limits.limiter.current_limit
        # the window's end, rounded up, is never further away than the window itself
        retry = (max(1, min(math.ceil(current.reset_at - time.time()), current.limit.get_expiry()))
                 if current else 60)
        if current is not None and limits.breaches is not None:
            limits.breaches.record(limits.rate_key(), current.limit)
        return error_response(429, "rate_limited", f"rate limit exceeded: {exc.description}",
                              {"limit": exc.description}, {"Retry-After": str(retry)})

    return limits
