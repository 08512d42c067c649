"""Task operations shared by REST routes, MCP tools and MCP tasks methods: start, look up
(only the owner sees a task), wait, cancel, list, read results and events."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from orchestration.models import TERMINAL_STATUSES

from .catalog import Catalog
from .errors import Conflict, NotFound, ValidationError
from .reports import Reports
from .results import status_document
from .runtime import TaskRuntime, new_task_id
from .store import Event, Store, TaskRecord
from .webhooks import Webhooks

# Fields of a start request that configure the task (the rest are about the call).
CALL_FIELDS = ("wait", "wait_seconds", "stream")


class TaskService:
    def __init__(self, store: Store, runtime: TaskRuntime, catalog: Catalog, webhooks: Webhooks):
        self.store = store
        self.runtime = runtime
        self.catalog = catalog
        self.webhooks = webhooks
        self.reports = Reports(store)  # report documents; callers look the task up with get() first

    def start(self, orchestrator: str, args: dict[str, Any], owner: str) -> TaskRecord:
        params = {k: v for k, v in args.items() if k not in (*CALL_FIELDS, "webhook_url", "webhook_secret")}
        params["provider"] = self.catalog.resolve_provider(params.get("provider"))
        if orchestrator == "research":
            self.catalog.select_sources(params.get("sources"))
        task_id = new_task_id(orchestrator)
        if args.get("webhook_url"):
            # design: the task's own subscription exists before its first event is written.
            self.webhooks.subscribe(owner, args["webhook_url"], None, task_id, args.get("webhook_secret"),
                                    field="webhook_url")
        return self.runtime.create(orchestrator, params, owner, task_id)

    def get(self, task_id: str, owner: str) -> TaskRecord:
        task = self.store.get_task(task_id)
        # design: another key's task is answered exactly like a missing one.
        if task is None or task.owner != owner:
            raise NotFound(f"task {task_id!r} not found")
        return task

    def status(self, task: TaskRecord, urls: dict[str, str]) -> dict[str, Any]:
        last = self.store.last_event_ids([task.task_id]).get(task.task_id, 0)
        return status_document(task, last, urls)

    def result(self, task_id: str, owner: str) -> dict[str, Any]:
        task = self.get(task_id, owner)
        if task.status not in TERMINAL_STATUSES:
            raise Conflict(f"task {task_id} is still {task.status}",
                           {"status": task.status, "progress": task.progress})
        return self.store.get_result(task_id) or {}

    def wait(self, task_id: str, owner: str, seconds: float) -> TaskRecord:
        self.get(task_id, owner)
        return self.runtime.wait(task_id, seconds)

    def follow(self, task_id: str, owner: str, seconds: float,
               on_event: Callable[[dict[str, Any]], None] | None) -> TaskRecord:
        """Wait up to `seconds` for the task to end, handing each new event to `on_event`."""
        if on_event is None:
            return self.wait(task_id, owner, seconds)
        self.get(task_id, owner)
        deadline = time.monotonic() + seconds
        last = 0
        while True:
            # design: the status first, then the events. The terminal event is written with the
            # final status, so a terminal status read here means the events read next include
            # the end (read the other way round, a task ending between the two reads lost it).
            task = self.store.get_task(task_id)
            for event in self.store.events(task_id, last):
                on_event(event.to_dict())
                last = event.id
            remaining = deadline - time.monotonic()
            if task.status in TERMINAL_STATUSES or remaining <= 0 or self.runtime.hub.stopping:
                return task
            self.runtime.hub.wait(task_id, last, min(remaining, 5.0))

    def cancel(self, task_id: str, owner: str) -> TaskRecord:
        return self.runtime.cancel(self.get(task_id, owner))

    def list(self, owner: str, status: str | None, orchestrator: str | None, limit: int,
             cursor: str | None) -> tuple[list[TaskRecord], str | None]:
        try:
            return self.store.list_tasks(owner, status, orchestrator, limit, cursor)
        except ValueError:
            raise ValidationError("invalid cursor", {"fields": {"cursor": ["not a cursor this server issued"]}}) from None

    def events(self, task_id: str, owner: str, after: int, limit: int) -> list[Event]:
        self.get(task_id, owner)
        return self.store.events(task_id, after, limit)

