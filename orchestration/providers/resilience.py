"""How provider calls survive rate limits and faults: tenacity retries 429/5xx and
connection errors with exponential backoff and jitter, honouring `Retry-After`, bounded in
attempts and in total time; a governor caps the requests one process has in flight to a
provider."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_base, wait_random_exponential

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries at most, and no retry whose wait would end past `max_seconds` after
    the first try started (so a long `Retry-After` fails the call instead of stalling it)."""

    attempts: int = 4
    max_seconds: float = 60.0
    backoff_base: float = 0.5
    backoff_cap: float = 8.0


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (`retry-after-ms`, `Retry-After` as seconds or an
    HTTP date), or None."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class wait_retry_after_or_backoff(wait_base):  # noqa: N801 - tenacity's naming of wait strategies
    """The server's `Retry-After` plus a little jitter when it sent one, else exponential
    backoff with full jitter."""

    def __init__(self, policy: RetryPolicy):
        self.backoff = wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_cap)

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = retry_after(exc) if exc else None
        if asked is not None:
            # design: many agents told the same Retry-After must not come back in one burst.
            return asked + random.uniform(0, min(1.0, 0.1 * asked + 0.05))
        return self.backoff(retry_state)


async def call_with_retry(fn: Callable[[], Awaitable[T]], policy: RetryPolicy,
                          transient: Callable[[BaseException], bool]) -> T:
    """`fn()` retried on transient errors per `policy`; the last error is re-raised."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.max_seconds),
        wait=wait_retry_after_or_backoff(policy),
        retry=retry_if_exception(transient),
        reraise=True,
    )
    return await retrying(fn)


class Governor:
    """At most `limit` requests in flight to one provider from this process, across tasks.

    design: built lazily on first use so it binds to the worker's event loop, not to
    whichever thread created the catalog."""

    def __init__(self, limit: int):
        self.limit = max(1, limit)
        self._semaphore: asyncio.Semaphore | None = None
        self.in_flight = 0

    async def __aenter__(self) -> Governor:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.limit)
        await self._semaphore.acquire()
        self.in_flight += 1
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.in_flight -= 1
        self._semaphore.release()
