"""The stream hub: many readers of one task share one store read per batch of new events,
and still see every event once, in order, whether events come from this worker (notify)
or from another one (the poller)."""

from __future__ import annotations

import threading
import time

from mcp.store import TaskRecord, open_store
from mcp.streaming import StreamHub


class CountingStore:
    """The real SQLite store, counting how often readers ask it for events."""

    def __init__(self, store):
        self.store = store
        self.event_reads = 0

    def events(self, task_id, after, limit):
        self.event_reads += 1
        return self.store.events(task_id, after, limit)

    def __getattr__(self, name):
        return getattr(self.store, name)


def reader(hub: StreamHub, task_id: str, seen: list[int], stop_at: int) -> None:
    hub.join(task_id)
    last = 0
    try:
        while last < stop_at:
            events = hub.events_after(task_id, last)
            for event in events:
                seen.append(event.id)
                last = event.id
            if not events:
                hub.wait(task_id, last, 5.0)
    finally:
        hub.leave(task_id)


def test_readers_of_one_task_share_store_reads_and_see_every_event(tmp_path):
    real = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    real.create_task(TaskRecord("t1", "research", "q", None, {"query": "q"}, created_at=time.time()))
    store = CountingStore(real)
    hub = StreamHub(store, poll_interval=0.02)
    hub.start()
    readers, total = 40, 30
    seen: list[list[int]] = [[] for _ in range(readers)]
    threads = [threading.Thread(target=reader, args=(hub, "t1", seen[i], total)) for i in range(readers)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    for n in range(total):
        event = real.append_event("t1", "agent_progress", {"n": n})
        if n % 2:
            hub.notify("t1", event.id)  # written by this worker; even ones only the poller finds
        time.sleep(0.01)
    for t in threads:
        t.join(10)
    hub.stop()
    assert all(ids == list(range(1, total + 1)) for ids in seen)
    # design: one read per reader to start, then about one per new batch for all of them
    assert store.event_reads < readers + 3 * total, store.event_reads
    assert hub.active_streams == 0 and not hub._windows


def test_a_replay_from_before_the_window_reads_the_store(tmp_path):
    real = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    real.create_task(TaskRecord("t2", "search", "q", None, {"query": "q"}, created_at=time.time()))
    for n in range(5):
        real.append_event("t2", "agent_progress", {"n": n})
    hub = StreamHub(real)
    hub.join("t2")
    assert [e.id for e in hub.events_after("t2", 3)] == [4, 5]  # fills the window from 4
    assert [e.id for e in hub.events_after("t2", 0)] == [1, 2, 3, 4, 5]  # older than the window
    assert [e.id for e in hub.events_after("t2", 4)] == [5]
    assert hub.events_after("t2", 5) == []
    hub.leave("t2")


def test_every_sse_route_takes_a_slot_and_gives_it_back_when_closed(settings):
    """THREADS=4, STREAM_RESERVE_THREADS=2: two streams of any kind, the third is 503 with
    Retry-After; closing one (however it ends) frees its slot."""
    import dataclasses

    from app import create_app

    app = create_app(dataclasses.replace(settings, threads=4, stream_reserve_threads=2))
    try:
        client = app.test_client()
        hub = app.extensions["mcp_orchestrator"].hub
        task_id = client.post("/tools/orchestrate_search", json={"query": "slots for streams"}).get_json()["task_id"]
        progress_call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "list_orchestrator_patterns", "arguments": {},
                                    "_meta": {"progressToken": "p"}}}
        openers = [lambda: client.get(f"/stream/{task_id}", buffered=False),
                   lambda: client.get("/sse", buffered=False),
                   lambda: client.post("/mcp", json=progress_call, buffered=False,
                                       headers={"Accept": "application/json, text/event-stream"})]
        for first, second in ((0, 1), (1, 2), (2, 0)):
            held = [openers[first](), openers[second]()]
            assert [r.status_code for r in held] == [200, 200] and hub.active_streams == 2
            for refused in (o() for o in openers):
                assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
                assert refused.get_json()["details"]["streams"] == {"open": 2, "capacity": 2}
            held[1].close()  # last opened first: each held stream_with_context keeps its context pushed
            assert hub.active_streams == 1
            held[0].close()
            assert hub.active_streams == 0
        health = client.get("/health").get_json()
        assert health["streams"]["capacity"] >= 2 and health["streams"]["open"] == 0
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
