"""Operator alerts (issue 16): each new dead-letter entry and each rate-limit breach is
posted to `ALERT_WEBHOOK_URL`, signed as webhooks are (DESIGN §9), out of band of the
request or task that caused it.

The URL is the operator's own (a chat bridge, an incident tool, Alertmanager's webhook
receiver), so unlike a user's webhook it may be a private address. A notification is tried
a few times with backoff by one sender thread per worker; one that still fails is logged
and dropped: the dead-letter list and the metrics keep the facts, the alert only tells."""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import threading
import time
from typing import Any

import httpx

from . import SERVICE_NAME, __version__
from .settings import Settings
from .webhooks import sign

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF = 1.0  # seconds before the second try, doubling
TIMEOUT = 10.0
QUEUE_SIZE = 1000


class Alerts:
    def __init__(self, settings: Settings):
        self.url = settings.alert_webhook_url
        self.secret = settings.alert_webhook_secret or settings.webhook_secret
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(QUEUE_SIZE)
        self._sender: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        if self.url and not self.secret:
            log.warning("ALERT_WEBHOOK_URL is set without ALERT_WEBHOOK_SECRET or WEBHOOK_SECRET: alerts go unsigned")

    def notify(self, kind: str, data: dict[str, Any]) -> None:
        """Queue one alert; never blocks and never raises."""
        if not self.url:
            return
        alert = {"id": f"alert_{secrets.token_hex(12)}", "type": kind, "service": SERVICE_NAME,
                 "version": __version__, "timestamp": time.time(), "data": data}
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.warning("alert queue full; dropped a %s alert", kind)
            return
        self._ensure_sender()

    def _ensure_sender(self) -> None:
        with self._lock:
            # design: started on first use in each process (a thread does not survive fork)
            if self._sender is None or self._pid != os.getpid() or not self._sender.is_alive():
                self._pid = os.getpid()
                self._sender = threading.Thread(target=self._run, name="alert-sender", daemon=True)
                self._sender.start()

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            while True:
                alert = self._queue.get()
                self._send(client, alert)

    def _send(self, client: httpx.Client, alert: dict[str, Any]) -> None:
        body = json.dumps(alert, separators=(",", ":"), ensure_ascii=False).encode()
        error = ""
        for attempt in range(ATTEMPTS):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "User-Agent": f"{SERVICE_NAME}/{__version__}",
                       "X-Webhook-Id": alert["id"], "X-Webhook-Event": alert["type"], "X-Webhook-Timestamp": timestamp}
            if self.secret:
                headers["X-Webhook-Signature"] = sign(self.secret, timestamp, body)
            try:
                response = client.post(self.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            time.sleep(BACKOFF * 2 ** attempt)
        log.warning("could not deliver a %s alert after %d tries: %s", alert["type"], ATTEMPTS, error)
