"""Webhooks (DESIGN §9): subscriptions in the store, a persisted outbox, and one deliverer
at a time (a store lock) posting signed events with exponential backoff.

A delivery is enqueued when its event is written, and sent out of band of the
orchestration by whichever worker holds the deliverer lock; the outbox survives restarts.
Each POST carries the event JSON, `X-Webhook-Id` (the delivery id, for idempotency),
`X-Webhook-Timestamp` and `X-Webhook-Signature: sha256=<hex HMAC of "timestamp.body">`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
import time
from typing import TYPE_CHECKING, Any

import httpx

from orchestration import netguard
from orchestration.models import TERMINAL_EVENTS
from orchestration.netguard import Resolver, resolve

from . import SERVICE_NAME, __version__, jsonio, metrics
from .errors import NotFound, ValidationError
from .settings import Settings
from .store import Event, Store, TaskRecord

if TYPE_CHECKING:
    from .deadletter import DeadLetters

log = logging.getLogger(__name__)

DEFAULT_EVENTS = sorted(TERMINAL_EVENTS)
MAX_ATTEMPTS = 8
DELIVERY_TIMEOUT = 10.0
LOCK_NAME = "webhook-deliverer"
SUBSCRIPTION_CACHE_SECONDS = 5.0


def refusal(url: str, allow_private: bool, resolver: Resolver = resolve) -> str | None:
    """Why `url` may not be a webhook target, or None (orchestration.netguard decides)."""
    return netguard.refusal(url, allow_private, resolver, " (WEBHOOK_ALLOW_PRIVATE=1 allows it)")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base: float) -> float:
    """Delay before the next try after `attempts` failures: base x 2^(n-1), with jitter."""
    return base * 2 ** (attempts - 1) * random.uniform(0.9, 1.1)


class Webhooks:
    def __init__(self, settings: Settings, store: Store, resolver: Resolver = resolve,
                 dead_letters: DeadLetters | None = None):
        self.settings = settings
        self.store = store
        self.resolver = resolver
        self.dead_letters = dead_letters
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    # -- subscriptions (request threads) ---------------------------------------------------

    def subscribe(self, owner: str, url: str, events: list[str] | None, task_id: str | None,
                  secret: str | None, field: str = "url") -> dict[str, Any]:
        why = refusal(url, self.settings.webhook_allow_private, self.resolver)
        if why:
            raise ValidationError(f"webhook URL refused: {why}", {"fields": {field: [why]}})
        hook = {"id": f"wh_{secrets.token_hex(12)}", "owner": owner, "url": url,
                "events": events or list(DEFAULT_EVENTS), "task_id": task_id,
                "secret": secret or self.settings.webhook_secret or secrets.token_hex(32),
                "created_at": time.time()}
        self.store.create_webhook(hook)
        return hook

    def get(self, webhook_id: str, owner: str) -> dict[str, Any]:
        hook = self.store.get_webhook(webhook_id)
        if hook is None or hook["owner"] != owner:
            raise NotFound(f"webhook {webhook_id!r} not found")
        return hook

    def unsubscribe(self, webhook_id: str, owner: str) -> None:
        self.get(webhook_id, owner)
        self.store.delete_webhook(webhook_id)

    # -- the outbox (worker loop) ----------------------------------------------------------

    async def enqueue(self, task: TaskRecord, event: Event) -> None:
        """Queue `event` for every subscription of the task's owner that wants it."""
        for hook in await self._subscriptions(task):
            if "*" in hook["events"] or event.event_type in hook["events"]:
                await asyncio.to_thread(self.store.enqueue_delivery, {
                    "id": f"whd_{secrets.token_hex(12)}", "webhook_id": hook["id"], "task_id": task.task_id,
                    "event_id": event.id, "event_type": event.event_type,
                    "payload": jsonio.dumps(event.to_dict()),
                    "next_attempt_at": time.time(), "created_at": time.time()})

    async def _subscriptions(self, task: TaskRecord) -> list[dict[str, Any]]:
        cached = self._cache.get(task.task_id)
        if cached and time.monotonic() - cached[0] < SUBSCRIPTION_CACHE_SECONDS:
            return cached[1]
        hooks = await asyncio.to_thread(self.store.webhooks_for, task.owner, task.task_id)
        self._cache[task.task_id] = (time.monotonic(), hooks)
        return hooks

    def forget(self, task_id: str) -> None:
        self._cache.pop(task_id, None)

    async def deliver_due(self, worker: str, client: httpx.AsyncClient) -> int:
        """Send what is due, if this worker holds the deliverer lock; how many were tried."""
        if not await asyncio.to_thread(self.store.try_lock, LOCK_NAME, worker, DELIVERY_TIMEOUT * 3):
            return 0
        due = await asyncio.to_thread(self.store.due_deliveries, 20)
        await asyncio.gather(*(self._attempt(d, client) for d in due))
        return len(due)

    @staticmethod
    async def _post(client: httpx.AsyncClient, hook: dict[str, Any], delivery: dict[str, Any], body: bytes,
                    timestamp: str) -> int:
        """POST one delivery; the receiver's status. Its body is never read.

        design: a receiver that answers a huge body, or drips one byte at a time (each
        within the client's per-read timeout), must cost one bounded attempt, not the
        deliverer's memory or every other subscription's deliveries."""
        headers = {"Content-Type": "application/json", "User-Agent": f"{SERVICE_NAME}/{__version__}",
                   "X-Webhook-Id": delivery["id"], "X-Webhook-Event": delivery["event_type"],
                   "X-Webhook-Timestamp": timestamp, "X-Webhook-Signature": sign(hook["secret"], timestamp, body)}
        async with client.stream("POST", hook["url"], content=body, headers=headers) as response:
            return response.status_code

    async def _attempt(self, delivery: dict[str, Any], client: httpx.AsyncClient) -> None:
        hook = await asyncio.to_thread(self.store.get_webhook, delivery["webhook_id"])
        attempts = delivery["attempts"] + 1
        if hook is None:
            await asyncio.to_thread(self.store.update_delivery, delivery["id"], status="dropped",
                                    attempts=attempts, last_error="subscription deleted")
            return
        body = delivery["payload"].encode()
        timestamp = str(int(time.time()))
        status, error = None, None
        why = refusal(hook["url"], self.settings.webhook_allow_private, self.resolver)
        if why:
            error = why  # design: checked again at delivery, since DNS may have changed since registration
        else:
            try:
                status = await asyncio.wait_for(self._post(client, hook, delivery, body, timestamp),
                                                DELIVERY_TIMEOUT)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                error = f"no answer within {DELIVERY_TIMEOUT:g} s"
        if status is not None and 200 <= status < 300:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            await asyncio.to_thread(self.store.update_delivery, delivery["id"], status="delivered",
                                    attempts=attempts, last_status=status, last_error=None,
                                    delivered_at=time.time())
            return
        final = attempts >= MAX_ATTEMPTS
        metrics.WEBHOOK_DELIVERIES.labels("failed" if final else "retry").inc()
        await asyncio.to_thread(
            self.store.update_delivery, delivery["id"], status="failed" if final else "pending", attempts=attempts,
            last_status=status, last_error=error or f"HTTP {status}",
            next_attempt_at=time.time() + backoff(attempts, self.settings.webhook_retry_base))
        if final and self.dead_letters is not None:
            await asyncio.to_thread(self.dead_letters.record, "webhook", delivery["id"], hook["owner"],
                                    "retries_exhausted", error or f"HTTP {status}", attempts)
