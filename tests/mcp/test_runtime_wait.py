"""A request waiting for a task (`wait: true`) must not miss the task's end when it lands
between the waiter's reads: it used to read the status, then the newest event id, and an
end in between left it asleep for the full five-second wait (one search in eight)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from mcp.runtime import TaskRuntime
from mcp.store import TaskRecord, open_store


class EndsBetweenReads:
    """The real store, where the task ends (as another worker would finish it) right after
    the waiter's first read, whichever read that is."""

    def __init__(self, store, task_id):
        self.store = store
        self.task_id = task_id
        self.reads = 0

    def _read(self):
        self.reads += 1
        if self.reads == 1:
            self.store.finish_task(self.task_id, "w1", "completed", {"status": "completed"}, None,
                                   "workflow_complete", {"status": "completed"})

    def last_event_ids(self, task_ids):
        out = self.store.last_event_ids(task_ids)
        self._read()
        return out

    def get_task(self, task_id):
        out = self.store.get_task(task_id)
        self._read()
        return out


class Hub:
    stopping = False

    def __init__(self):
        self.waits = []

    def wait(self, task_id, after, timeout):
        self.waits.append(after)
        time.sleep(min(timeout, 0.05))  # the real hub would sleep until an event newer than `after`
        return False


def test_an_end_between_the_waiters_reads_is_seen_without_sleeping(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_task(TaskRecord("search_1", "search", "q", None, {"query": "q"}, created_at=time.time()))
    store.claim_task("search_1", "w1", ttl=30)
    store.append_event("search_1", "workflow_start", {})
    hub = Hub()
    runtime = SimpleNamespace(store=EndsBetweenReads(store, "search_1"), hub=hub)
    task = TaskRuntime.wait(runtime, "search_1", 5.0)
    assert task.status == "completed"
    # either the status read saw the end, or the wait was for an id the end's event exceeds
    assert all(after < store.last_event_ids(["search_1"])["search_1"] for after in hub.waits)
