"""The dead-letter list (issue 16): tasks that failed for good and webhook deliveries that
ran out of retries, kept in the store with the reason and the last error until an operator
retries or dismisses them. Entries belong to the owner of what failed; an admin key
(`ADMIN_KEYS`) sees everyone's."""

from __future__ import annotations

import logging
import time
from typing import Any

from . import metrics
from .alerts import Alerts
from .errors import Conflict, NotFound
from .store import Store, dead_letter_id

log = logging.getLogger(__name__)

KINDS = ("task", "webhook")


class DeadLetters:
    def __init__(self, store: Store, alerts: Alerts):
        self.store = store
        self.alerts = alerts

    def record(self, kind: str, ref: str, owner: str, reason: str, error: str | None, attempts: int) -> dict[str, Any]:
        """Add (or refresh) the entry of a failed task or delivery; a new one is alerted."""
        entry = {"id": dead_letter_id(kind, ref), "kind": kind, "ref": ref, "owner": owner, "reason": reason,
                 "error": error, "created_at": time.time(), "attempts": attempts}
        if self.store.add_dead_letter(entry):
            log.warning("dead letter: %s %s (%s): %s", kind, ref, reason, error,
                        extra={"task_id": ref if kind == "task" else None, "dead_letter_id": entry["id"]})
            self.alerts.notify("dead_letter", entry)
        self.refresh_gauge()
        return entry

    def refresh_gauge(self) -> None:
        metrics.DEAD_LETTER_ENTRIES.set(self.store.count_dead_letters())

    def list(self, owner: str, admin: bool, kind: str | None, limit: int,
             cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return self.store.list_dead_letters(None if admin else owner, kind, limit, cursor)

    def get(self, entry_id: str, owner: str, admin: bool) -> dict[str, Any]:
        entry = self.store.get_dead_letter(entry_id)
        if entry is None or not (admin or entry["owner"] == owner):
            raise NotFound(f"dead-letter entry {entry_id!r} not found")
        return entry

    def dismiss(self, entry_id: str, owner: str, admin: bool) -> None:
        self.get(entry_id, owner, admin)
        self.store.delete_dead_letter(entry_id)
        self.refresh_gauge()

    def retry(self, entry_id: str, owner: str, admin: bool) -> dict[str, Any]:
        """Run it again: a task resumes from its checkpoints (what finished is not bought
        again), a delivery is sent again with a fresh set of attempts. The entry goes; a
        new failure makes a new one."""
        entry = self.get(entry_id, owner, admin)
        if entry["kind"] == "task":
            if not self.store.reopen_task(entry["ref"]):
                task = self.store.get_task(entry["ref"])
                raise Conflict(f"task {entry['ref']} is {task.status if task else 'gone'}, not failed",
                               {"status": task.status if task else None})
        else:
            delivery = self.store.get_delivery(entry["ref"])
            if delivery is None:
                raise Conflict(f"delivery {entry['ref']} is gone", {})
            if self.store.get_webhook(delivery["webhook_id"]) is None:
                raise Conflict(f"the subscription of delivery {entry['ref']} was deleted",
                               {"webhook_id": delivery["webhook_id"]})
            self.store.update_delivery(entry["ref"], status="pending", attempts=0, next_attempt_at=time.time(),
                                       last_error=None)
        self.store.delete_dead_letter(entry_id)
        self.refresh_gauge()
        log.info("dead letter %s retried: %s %s", entry_id, entry["kind"], entry["ref"])
        return entry
