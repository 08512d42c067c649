"""Rate limits with flask-limiter (DESIGN §10), counted in shared memory by every worker of
a host and, with Redis, reserved from the store so every host shares one count.

`RATE_LIMIT_DEFAULT` applies to every route but the health probes; `RATE_LIMIT_ORCHESTRATE`
to starting a task, on REST and MCP alike. Both are per API key, else per client address
(mcp.locality: `TRUSTED_PROXIES` hops of X-Forwarded-For trusted)."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from flask_limiter import HeaderNames, Limiter, RateLimitExceeded
from limits import RateLimitItem, WindowStats, parse_many
from limits.storage import Storage

from . import metrics
from .alerts import Alerts
from .errors import TooManyRequests, error_response
from .hostcounters import Entry, HostCounters
from .locality import client_address
from .settings import Settings
from .store import Store, open_store

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/health", "/health/live"})
SCHEME = "orchestrator-store"
# Redis: a host reserves at most this many units of a limit at a time, and at most this
# share of what is left (so a limit of 5 is counted one unit at a time, in Redis).
RESERVE_BATCH = 16
RESERVE_SHARE = 16
# SQLite (one host): a worker takes up to this many units of a limit from the host's count
# at once and spends the spare ones without the host's lock; only while the window has more
# than SPARE_SHARE units left per unit taken, so a limit a window can come near to spending
# (the default 600 a minute near its end, any limit under 2 x SPARE_SHARE) is counted one
# unit at a time, exactly.
SPARE_BATCH = 16
SPARE_SHARE = 128
# How long a thread trusts the figures its own last increment returned.
JUST_HIT_SECONDS = 0.05
# design: flask-limiter writes Retry-After on every response it counts, so a plain 200 told
# clients to wait a minute. Its header hook is unhooked (RateLimits sets the X-RateLimit-*
# headers itself), and its Retry-After is named this internal header all the same, so that
# the hook, were it ever back, could not tell a 200 to wait; Retry-After is set only by the
# refusals themselves (429 here, 503s).
LIMITER_RETRY_AFTER = "X-Limiter-Retry-After"
# Storage keys of (limit, rate key, scope) kept at most; past it they are dropped all at once.
STORAGE_KEYS_KEPT = 4096


def limit_of(key: str) -> int | None:
    """The limit's amount from a `limits` key (`LIMITER/<identifiers>/<amount>/<multiples>/<granularity>`)."""
    parts = key.rsplit("/", 3)
    return int(parts[1]) if len(parts) == 4 and parts[1].isdigit() else None


class StoreStorage(Storage):
    """A `limits` storage (fixed windows) counted in shared memory on each host.

    design: a store write per request cost a third of the service's throughput (a SQLite
    write transaction, serialised across workers). The count now lives in mcp.hostcounters,
    shared by every worker of the host under one lock, so it is exact across workers:
    - SQLite store (one host by nature): the host's table is the count. Never exceeded.
    - Redis store (several hosts): the table holds units this host reserved from the shared
      Redis counter, up to RESERVE_BATCH at a time and never more than the limit leaves, so
      every admitted request owns a unit under the limit: never exceeded either. A host's
      window ends when Redis's does, measured from before the reservation was asked. The cost
      is on the other side: units one host reserved and did not spend are not offered to the
      others, so with H hosts a window may admit up to (H - 1) x RESERVE_BATCH requests fewer
      than the limit (none on one host; none for limits under RESERVE_SHARE x 2, which are
      reserved one unit at a time).
    A key that finds no slot in a full table is counted in the store, as before.

    design: on SQLite a worker also keeps a few units of a key it counted on the host table
    (SPARE_BATCH, SPARE_SHARE) and spends them under a thread lock alone: the host table's
    flock, a syscall pair that gives up the GIL, was a twelfth of a cheap MCP call's
    throughput under gunicorn (issue 19). Those units are counted on the host table when
    taken, and each is one place in the count, so the limit is never exceeded and the
    X-RateLimit-Remaining of the requests they admit count down without a gap or a repeat.
    The cost: units a worker took and did not spend before the window ran out are not
    offered to the others, so a window may admit up to (WORKERS - 1) x (SPARE_BATCH - 1)
    requests fewer than its limit, only when the limit is large (more than 2 x SPARE_SHARE
    left when the units were taken) and never for a limit under 2 x SPARE_SHARE."""

    STORAGE_SCHEME = [f"{SCHEME}+sqlite", f"{SCHEME}+redis"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, host_file: str = "", **options: Any):
        # design: `limits` builds storages from a URI; ours wraps the store URL after the scheme.
        store_url = uri.split("+", 1)[1]
        self.store: Store = open_store(store_url)
        self.shared = not store_url.startswith("sqlite")
        path = getattr(self.store, "path", None)
        if not host_file and path is None:
            raise ValueError(f"{store_url.split(':', 1)[0]} store: the rate limiter needs host_file for its counters")
        self.table = HostCounters(host_file or f"{path}.ratelimit")
        self._last = threading.local()
        self._spare: dict[str, list[float]] = {}  # key -> [window end, last unit spent, last unit held]
        self._spare_lock = threading.Lock()
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return (Exception,)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.count(key, expiry, amount).value

    def count(self, key: str, expiry: int, amount: int = 1) -> Entry:
        """Count `amount` against `key`: the key's figures after this count (its value, and
        the window's end), which are this request's place in the count."""
        now = time.time()
        entry = None if self.shared else self._spend_spare(key, amount, now)
        if entry is None:
            entry = self._count_on_host(key, expiry, amount, now)
        self._last.hit = (key, entry, time.monotonic())
        return entry

    def _spend_spare(self, key: str, amount: int, now: float) -> Entry | None:
        """This request's place from the units this worker holds, or None."""
        with self._spare_lock:
            held = self._spare.get(key)
            if held is None or held[0] <= now or held[2] - held[1] < amount:
                return None
            held[1] += amount
            return Entry(held[0], int(held[1]))

    def _count_on_host(self, key: str, expiry: int, amount: int, now: float) -> Entry:
        limit = limit_of(key)
        with self.table.locked() as table:
            if not self.shared:
                # design: threads of this worker that found no spare unit at once queue here;
                # the first takes a batch, the others spend it. Units are taken, and published,
                # under the table's lock only when this worker holds none, so a worker never
                # holds more than one batch: the stated bound. (Each taking a batch of its own
                # and the last overwriting the rest lost 86 of 512 units under load.)
                entry = self._spend_spare(key, amount, time.time())
                if entry is not None:
                    return entry
            place, entry = table.lookup(key, now)
            if place is not None:
                if self.shared and limit is not None:
                    entry = self._reserve(key, expiry, amount, limit, entry, now)
                else:
                    entry = self._count(key, expiry, amount, entry, now)
                    spare = 0
                    if limit is not None and limit - entry.value >= 2 * SPARE_SHARE:
                        spare = min(SPARE_BATCH - amount, (limit - entry.value) // SPARE_SHARE)
                    if spare > 0:
                        table.write(place, entry._replace(value=entry.value + spare))
                        with self._spare_lock:
                            if len(self._spare) >= STORAGE_KEYS_KEPT:
                                self._spare.clear()
                            self._spare[key] = [entry.expires, entry.value, entry.value + spare]
                        return entry
                table.write(place, entry)
        if place is None:
            value, expires = self.store.incr_counter(key, expiry, amount)
            return Entry(expires, value)
        return entry

    def _count(self, key: str, expiry: int, amount: int, entry: Entry | None, now: float) -> Entry:
        if entry is None:
            # a new window; a key that once found the table full has its count in the store
            value, expires = self.store.get_counter(key)
            entry = Entry(expires if value else now + expiry, value)
        return entry._replace(value=entry.value + amount)

    def _reserve(self, key: str, expiry: int, amount: int, limit: int, entry: Entry | None, now: float) -> Entry:
        entry = entry or Entry(0.0)
        if entry.tokens >= amount:
            tokens = entry.tokens - amount
            return entry._replace(tokens=tokens, value=entry.seen - tokens)
        if entry.expires > now and entry.seen >= limit:
            return entry._replace(tokens=0, value=max(entry.seen, limit) + amount)
        need = amount - entry.tokens
        batch = max(need, min(RESERVE_BATCH, (limit - entry.seen) // RESERVE_SHARE))
        asked = time.time()
        total, expires = self.store.incr_counter(key, expiry, batch)
        expires -= time.time() - asked  # the window as Redis counts it, ending no later
        if entry.expires > now:
            expires = min(expires, entry.expires)
        tokens = entry.tokens + max(0, min(batch, limit - (total - batch)))
        if tokens < amount:  # the window is spent: units short of the cost are spent with it
            return Entry(expires, total, 0, total)
        return Entry(expires, total - (tokens - amount), tokens - amount, total)

    def _entry(self, key: str) -> Entry | None:
        """The key's figures. flask-limiter reads them back for the X-RateLimit headers right
        after the hit: those are the figures the hit itself returned (this request's place in
        the count), not whatever other threads have made of the count since."""
        last = getattr(self._last, "hit", None)
        if last and last[0] == key and time.monotonic() - last[2] < JUST_HIT_SECONDS:
            return last[1]
        with self.table.locked() as table:
            return table.lookup(key, time.time())[1]

    def get(self, key: str) -> int:
        entry = self._entry(key)
        return entry.value if entry else self.store.get_counter(key)[0]

    def get_expiry(self, key: str) -> float:
        entry = self._entry(key)
        return entry.expires if entry else self.store.get_counter(key)[1]

    def check(self) -> bool:
        try:
            self.store.ping()
            return True
        except Exception:  # noqa: BLE001 - `check` answers a yes/no health question
            return False

    def reset(self) -> int | None:
        with self._spare_lock:
            self._spare.clear()  # this worker's; another's are spent or end with their window
        self.table.clear()
        return self.store.reset_counters()

    def clear(self, key: str) -> None:
        with self._spare_lock:
            self._spare.pop(key, None)
        self.table.clear(key)
        self.store.reset_counters(key)


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


def host_file(settings: Settings) -> str:
    """Where this host keeps its counters: beside a SQLite database, else in DATA_DIR (one
    file per store URL, so services sharing a host but not a store do not share counts)."""
    url = settings.resolved_store_url
    if url.startswith("sqlite"):
        return ""
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return str(Path(settings.data_dir).resolve() / f"ratelimit-{digest}.counters")


class RateLimits:
    """RATE_LIMIT_DEFAULT on every request but the health probes, RATE_LIMIT_ORCHESTRATE on
    task starts, through flask-limiter's strategy and storage.

    design: flask-limiter's own per-request check resolved blueprint, decorator and
    exemption scopes and re-parsed the limit string on every request: a quarter of a cheap
    request's CPU. No route here has its own limit, so the default limit is hit directly,
    with the limit parsed once, and the same X-RateLimit-* headers are set; `self.limiter`
    stays a flask-limiter `Limiter` for its strategy and storage."""

    def __init__(self, app: Flask, settings: Settings, breaches: Breaches | None = None):
        self.settings = settings
        self.breaches = breaches
        self.default = parse_many(settings.rate_limit_default)
        self.orchestrate = parse_many(settings.rate_limit_orchestrate)
        self._storage_keys: dict[tuple[RateLimitItem, str, str], str] = {}
        self.limiter = Limiter(
            self.rate_key,
            app=app,
            storage_uri=f"{SCHEME}+{settings.resolved_store_url}",
            storage_options={"host_file": host_file(settings)},
            strategy="fixed-window",
            headers_enabled=True,
            header_name_mapping={HeaderNames.RETRY_AFTER: LIMITER_RETRY_AFTER},
            enabled=settings.rate_limit_enabled,
        )
        self.limiter.request_filter(lambda: request.path in EXEMPT_PATHS)
        # flask-limiter 4 has no switch for its per-request hooks: unhooked here, replaced by
        # the two below (its teardown only cleared the per-request state of the check)
        for hooks in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
            hooks[None] = [f for f in hooks.get(None, []) if not self._limiter_hook(f)]
        if settings.rate_limit_enabled:
            app.before_request(self.hit_default)
            app.after_request(self.add_headers)

    def _limiter_hook(self, hook: Any) -> bool:
        return (getattr(hook, "__self__", None) is self.limiter
                or (isinstance(hook, partial) and self.limiter in hook.args))

    def rate_key(self) -> str:
        name = getattr(g, "api_key_name", None)
        # the client's address as mcp.observability found it for this request, else found here
        return f"key:{name}" if name else f"ip:{getattr(g, 'client_address', None) or client_address(self.settings)}"

    def storage_key(self, item: RateLimitItem, key: str, scope: str) -> str:
        """`item.key_for(key, scope)`, built once per limit, key and scope."""
        kept = self._storage_keys.get((item, key, scope))
        if kept is None:
            if len(self._storage_keys) >= STORAGE_KEYS_KEPT:
                self._storage_keys.clear()
            kept = self._storage_keys[(item, key, scope)] = item.key_for(key, scope)
        return kept

    def hit_default(self) -> None:
        """Count this request against RATE_LIMIT_DEFAULT; 429 when over."""
        if request.path in EXEMPT_PATHS:
            return
        # design: one count per key over every route, as DESIGN §10 and the configuration
        # reference say (flask-limiter's own check kept one count per key and route).
        # The fixed-window strategy's hit and window stats, in one count: the storage returns
        # the figures of this request's place in the count, which is what the strategy's
        # get_window_stats read back from it.
        key = self.rate_key()
        storage = self.limiter.limiter.storage
        shown = None  # the tightest limit so far, which add_headers shows (a 429's headers too)
        for item in self.default:
            counted = storage.count(self.storage_key(item, key, "default"), item.get_expiry())
            allowed = counted.value <= item.amount
            stats = WindowStats(counted.expires, max(0, item.amount - counted.value))
            if shown is None or stats.remaining < shown[1].remaining:
                shown = g.rate_limit = (item, stats)
            if not allowed:
                if self.breaches is not None:
                    self.breaches.record(key, item)
                raise TooManyRequests(f"rate limit exceeded: {item}", {"limit": str(item)},
                                      headers={"Retry-After": str(max(1, min(math.ceil(stats.reset_time - time.time()),
                                                                             item.get_expiry())))})

    @staticmethod
    def add_headers(response: Response) -> Response:
        """flask-limiter's headers, for the tightest default limit (added: nothing else
        writes them, flask-limiter's own hook being unhooked)."""
        shown = getattr(g, "rate_limit", None)
        if shown is not None:
            item, stats = shown
            response.headers.extend((("X-RateLimit-Limit", str(item.amount)),
                                     ("X-RateLimit-Remaining", str(stats.remaining)),
                                     ("X-RateLimit-Reset", str(int(stats.reset_time)))))
        return response

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
        # a limit flask-limiter checks itself (a decorated route)
        current = limits.limiter.current_limit
        # the window's end, rounded up, is never further away than the window itself
        retry = (max(1, min(math.ceil(current.reset_at - time.time()), current.limit.get_expiry()))
                 if current else 60)
        if current is not None and limits.breaches is not None:
            limits.breaches.record(limits.rate_key(), current.limit)
        return error_response(429, "rate_limited", f"rate limit exceeded: {exc.description}",
                              {"limit": exc.description}, {"Retry-After": str(retry)})

    return limits
