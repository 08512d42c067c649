"""The store contract, run against every backend (CONVENTIONS 5)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from mcp.store import Event, TaskRecord
from mcp.store.sqlite import SQLiteStore


def make_task(store, task_id="research_1", **kw):
    task = TaskRecord(task_id=task_id, orchestrator="research", query="q", title=None, params={"query": "q"},
                      created_at=kw.pop("created_at", time.time()), **kw)
    store.create_task(task)
    return task


def test_event_ids_are_contiguous_per_task_under_concurrent_writers(store):
    make_task(store, "t1")
    make_task(store, "t2")

    def write(task_id):
        for _ in range(50):
            store.append_event(task_id, "agent_progress", {"x": 1})

    threads = [threading.Thread(target=write, args=(t,)) for t in ("t1", "t1", "t2", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.id for e in store.events("t1")] == list(range(1, 101))
    assert [e.id for e in store.events("t2", after=90)] == list(range(91, 101))
    assert store.last_event_ids(["t1", "t2", "nope"]) == {"t1": 100, "t2": 100}


def test_only_one_worker_claims_a_task_and_others_wait_for_lease_expiry(store):
    make_task(store, "t1")
    assert store.claim_task("t1", "w1", ttl=0.3) is not None
    assert store.claim_task("t1", "w2", ttl=0.3) is None
    assert store.claimable_tasks(10) == []
    time.sleep(0.35)
    assert store.claimable_tasks(10) == ["t1"]
    resumed = store.claim_task("t1", "w2", ttl=5)
    assert resumed.lease_owner == "w2" and resumed.attempts == 2
    assert store.renew_lease("t1", "w1", 5) is False
    assert store.renew_lease("t1", "w2", 5) is True


def test_a_worker_that_lost_the_lease_cannot_write_events(store):
    make_task(store, "t1")
    store.claim_task("t1", "w1", ttl=0.1)
    assert store.append_event("t1", "agent_start", {}, worker="w1").id == 1
    time.sleep(0.15)
    store.claim_task("t1", "w2", ttl=5)
    assert store.append_event("t1", "agent_start", {}, worker="w1") is None
    assert store.append_event("t1", "agent_start", {}, worker="w2").id == 2


def test_finish_is_atomic_with_the_terminal_event_and_refuses_later_writes(store):
    make_task(store, "t1")
    store.claim_task("t1", "w1", ttl=5)
    event = store.finish_task("t1", "w1", "completed", {"status": "completed"}, None, "workflow_complete", {})
    assert event.id == 1 and event.event_type == "workflow_complete"
    assert store.get_task("t1").status == "completed"
    assert store.get_result("t1") == {"status": "completed"}
    assert store.append_event("t1", "agent_complete", {}, worker="w1") is None
    assert store.finish_task("t1", "w1", "failed", {}, "x", "workflow_error", {}) is None


def test_pending_task_is_cancelled_without_a_worker(store):
    make_task(store, "t1")
    assert store.finish_task("t1", None, "cancelled", {}, None, "workflow_cancelled", {}) is not None
    make_task(store, "t2")
    store.claim_task("t2", "w1", ttl=5)
    assert store.finish_task("t2", None, "cancelled", {}, None, "workflow_cancelled", {}) is None


def test_cancel_requests_and_checkpoints(store):
    make_task(store, "t1")
    make_task(store, "t2")
    store.request_cancel("t2")
    assert store.cancel_requested(["t1", "t2"]) == {"t2"}
    store.save_checkpoint("t1", "agent:agent_1", {"content": "x"})
    store.save_checkpoint("t1", "agent:agent_1", {"content": "y"})
    assert store.load_checkpoints("t1") == {"agent:agent_1": {"content": "y"}}


def test_checkpoints_of_several_tasks_are_saved_in_one_batch_in_order(store):
    """save_checkpoints writes a batch in order (a later value of a key wins) and hands
    each item its outcome; a value that cannot be encoded fails alone."""
    make_task(store, "t1")
    make_task(store, "t2")
    circular: list = []
    circular.append(circular)  # a bug in the code that built it: no encoder writes it
    results = store.save_checkpoints([
        ("t1", {"evidence:agent_1": {"u": "a"}, "usage": {"calls": 1}}),
        ("t2", {"agent:agent_1": {"content": "x"}}),
        ("t1", {"agent:agent_1": {"content": "y"}, "usage": {"calls": 2}}),
        ("t2", {"bad": circular}),
    ])
    assert results[:3] == [None, None, None] and isinstance(results[3], Exception)
    assert store.load_checkpoints("t1") == {"evidence:agent_1": {"u": "a"}, "agent:agent_1": {"content": "y"},
                                            "usage": {"calls": 2}}
    assert store.load_checkpoints("t2") == {"agent:agent_1": {"content": "x"}}


def test_list_tasks_pages_newest_first_and_filters(store):
    for i in range(5):
        make_task(store, f"t{i}", created_at=1000.0 + i, owner="alice" if i % 2 else "bob")
    page, cursor = store.list_tasks(limit=2)
    assert [t.task_id for t in page] == ["t4", "t3"]
    page2, cursor2 = store.list_tasks(limit=2, cursor=cursor)
    assert [t.task_id for t in page2] == ["t2", "t1"]
    page3, cursor3 = store.list_tasks(limit=2, cursor=cursor2)
    assert [t.task_id for t in page3] == ["t0"] and cursor3 is None
    alice, _ = store.list_tasks(owner="alice")
    assert {t.task_id for t in alice} == {"t1", "t3"}


def test_workers_heartbeat_expires(store):
    store.heartbeat("w1", {"active_streams": 2}, ttl=0.2)
    assert store.live_workers() == [{"worker": "w1", "active_streams": 2}]
    time.sleep(0.25)
    assert store.live_workers() == []


def test_webhooks_outbox_and_locks(store):
    hook = {"id": "wh_1", "owner": "alice", "url": "https://x.example/h", "events": ["*"], "task_id": None,
            "secret": "s" * 32, "created_at": 1.0}
    store.create_webhook(hook)
    store.create_webhook({**hook, "id": "wh_2", "task_id": "t9", "created_at": 2.0})
    assert [h["id"] for h in store.webhooks_for("alice", "t1")] == ["wh_1"]
    assert {h["id"] for h in store.webhooks_for("alice", "t9")} == {"wh_1", "wh_2"}
    assert store.count_webhooks() == 2
    delivery = {"id": "d1", "webhook_id": "wh_1", "task_id": "t1", "event_id": 3, "event_type": "workflow_complete",
                "payload": "{}", "next_attempt_at": time.time() - 1, "created_at": time.time()}
    store.enqueue_delivery(delivery)
    store.enqueue_delivery({**delivery, "id": "d2"})  # the same event again is ignored
    assert [d["id"] for d in store.due_deliveries(10)] == ["d1"]
    store.update_delivery("d1", status="pending", attempts=1, next_attempt_at=time.time() + 60)
    assert store.due_deliveries(10) == []
    assert store.deliveries("wh_1")[0]["attempts"] == 1
    assert store.try_lock("deliverer", "w1", 0.3) and not store.try_lock("deliverer", "w2", 0.3)
    assert store.try_lock("deliverer", "w1", 0.3)
    time.sleep(0.35)
    assert store.try_lock("deliverer", "w2", 5)
    assert store.delete_webhook("wh_1") and store.get_webhook("wh_1") is None


def test_concurrent_calls_of_one_session_keep_every_request_record(store):
    store.save_session("s1", {"owner": "a"}, ttl=60)
    start = threading.Barrier(20)

    def call(n):
        start.wait()
        store.record_session_call("s1", str(n), 60, task_id=f"research_{n}")
        if n % 2:
            store.record_session_call("s1", str(n), 60, cancelled=True)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [store.session_call("s1", str(n)) for n in range(20)] == [(f"research_{n}", bool(n % 2)) for n in range(20)]
    # a cancel recorded before the task is seen by whoever records the task
    assert store.record_session_call("s1", "late", 60, cancelled=True) == (None, True)
    assert store.record_session_call("s1", "late", 60, task_id="research_late") == ("research_late", True)
    assert store.session_call("s1", "never") == (None, False)
    assert store.delete_session("s1") and store.session_call("s1", "1") == (None, False)


def test_saving_a_session_without_create_never_brings_a_deleted_one_back(store):
    assert store.save_session("s2", {"owner": "a"}, ttl=60)
    assert store.save_session("s2", {"owner": "a", "log_level": "info"}, ttl=60, create=False)
    assert store.get_session("s2")["log_level"] == "info"
    store.delete_session("s2")
    assert not store.save_session("s2", {"owner": "a"}, ttl=60, create=False)
    assert store.get_session("s2") is None


def test_sessions_and_counters(store):
    store.save_session("s1", {"owner": "a"}, ttl=0.3)
    assert store.get_session("s1") == {"owner": "a"}
    assert store.push_session_message("s1", {"n": 1}) == 1 and store.push_session_message("s1", {"n": 2}) == 2
    assert store.session_messages("s1", 1) == [(2, {"n": 2})]
    time.sleep(0.35)
    assert store.get_session("s1") is None
    hits = [store.incr_counter("rl:a", 0.3) for _ in range(3)]
    assert [value for value, _ in hits] == [1, 2, 3]
    # one window: every hit reports the expiry the first one set, as get_counter does
    assert max(e for _, e in hits) - min(e for _, e in hits) < 0.01
    assert store.get_counter("rl:a") == (3, pytest.approx(hits[0][1], abs=0.01))
    time.sleep(0.35)
    assert store.get_counter("rl:a")[0] == 0 and store.incr_counter("rl:a", 5)[0] == 1


def test_response_cache_is_shared_and_expires(store):
    assert store.cache_get("src:k") is None
    store.cache_set("src:k", '{"hits": []}', ttl=0.3)
    assert store.cache_get("src:k") == '{"hits": []}'
    time.sleep(0.35)
    assert store.cache_get("src:k") is None


def test_report_documents_are_kept_per_format_and_the_first_saved_wins(store):
    pdf = b"%PDF-1.7\x00\xff binary"
    assert store.get_report("t1", "pdf") is None
    assert store.save_report("t1", "pdf", pdf) == pdf
    assert store.save_report("t1", "pdf", b"made later by another worker") == pdf
    assert store.get_report("t1", "pdf") == pdf
    assert store.get_report("t1", "md") is None and store.get_report("t2", "pdf") is None
    assert store.save_report("t1", "md", b"# md") == b"# md" and store.get_report("t1", "pdf") == pdf

def test_cache_add_sets_once_and_take_hands_a_value_to_one_taker(store):
    assert store.cache_add("oauth:code:a", "v1", ttl=0.3)
    assert not store.cache_add("oauth:code:a", "v2", ttl=5)
    assert store.cache_take("oauth:code:a") == "v1"
    assert store.cache_take("oauth:code:a") is None and store.cache_get("oauth:code:a") is None
    store.cache_set("oauth:code:b", "v", ttl=0.1)
    time.sleep(0.15)
    assert store.cache_take("oauth:code:b") is None
    assert store.cache_add("oauth:code:b", "again", ttl=5) and store.cache_get("oauth:code:b") == "again"


def test_batched_appends_keep_order_fence_by_lease_and_isolate_a_bad_item(store):
    make_task(store, "t1")
    make_task(store, "t2")
    assert store.claim_task("t1", "w1", ttl=30) is not None
    store.append_event("t1", "workflow_start", {})
    batch = [("t1", "agent_start", {"n": 1}, "agent_1", None, "w1", 100.0),
             ("t2", "agent_start", {"n": 2}, None, None, "w1", None),  # w1 holds no lease on t2
             ("t1", "agent_progress", {"n": 3}, "agent_1", 42.0, "w1", None),
             ("t1", "agent_complete", {"n": 4}, "agent_1", None, None, None)]
    events = store.append_events(batch)
    assert [e.id if e else None for e in events] == [2, None, 3, 4]
    assert events[0].timestamp == 100.0 and events[1] is None
    assert [(e.id, e.data["n"]) for e in store.events("t1", 1)] == [(2, 1), (3, 3), (4, 4)]
    assert store.get_task("t1").progress == 42.0 and store.events("t2") == []
    # an item that cannot be stored fails alone; the others are written
    circular: dict = {}
    circular["self"] = circular
    mixed = store.append_events([("t1", "agent_start", {"n": 5}, None, None, None, None),
                                 ("t1", "agent_start", circular, None, None, None, None),
                                 ("t1", "agent_complete", {"n": 6}, None, None, None, None)])
    assert isinstance(mixed[1], Exception)
    assert isinstance(mixed[0], Event) and isinstance(mixed[2], Event) and mixed[2].id == mixed[0].id + 1
    assert [e.data["n"] for e in store.events("t1", 4)] == [5, 6]


def test_waiting_for_events_blocks_until_a_stream_grows_or_says_it_cannot(store):
    make_task(store, "t1")
    make_task(store, "t2")
    store.append_event("t1", "workflow_start", {})
    if isinstance(store, SQLiteStore):
        assert store.wait_for_events({"t1": 0}, 0.1) is None  # SQLite cannot block: the hub polls
        return
    assert store.wait_for_events({"t1": 0, "t2": 0}, 0.1) == {"t1": 1}
    started = time.monotonic()
    assert store.wait_for_events({"t1": 1, "t2": 0}, 0.2) == {}
    assert time.monotonic() - started >= 0.15
    timer = threading.Timer(0.1, lambda: store.append_event("t2", "workflow_start", {}))
    timer.start()
    assert store.wait_for_events({"t1": 1, "t2": 0}, 5.0) == {"t2": 1}
    assert time.monotonic() - started < 2.0
    # the reader may see the event before the appending thread has read the script's reply:
    # let it finish before the fixture closes the store under it
    timer.join(5)


def _open_at_once(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        store = SQLiteStore(path)
        store.create_task(TaskRecord(f"search_{os.getpid()}", "search", "q", None, {"query": "q"},
                                     created_at=time.time()))
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_workers_booting_together_on_a_new_database_all_open_it(tmp_path):
    # Gunicorn starts every worker at once; on a fresh DATA_DIR each creates the schema and
    # switches the file to WAL. That switch used to answer "database is locked" to a worker
    # now and then, the worker failed to boot, and gunicorn shut the whole service down.
    ctx = multiprocessing.get_context("fork")
    for attempt in range(12):
        path = str(tmp_path / f"boot{attempt}" / "orchestrator.db")
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, results)) for _ in range(6)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(10)
        assert outcomes == ["ok"] * 6, (attempt, outcomes)
        assert len(SQLiteStore(path).list_tasks(owner=None, limit=10)[0]) == 6


def _count_in_child(store, results):
    make_task(store, f"child_{os.getpid()}")
    results.put((store._pool.open, len(store.list_tasks(owner=None, limit=100)[0])))


def test_a_sqlite_process_keeps_a_few_connections_however_many_threads_use_it(tmp_path):
    """Issue 19: a connection per thread cost each worker ~0.3 MB per thread that ever touched
    the store (150 stream threads: 45 MB). Threads now share a pool of POOL_SIZE connections,
    a read inside a transaction uses the transaction's connection (no wait on the pool while
    holding the writer turn), and a forked child opens its own."""
    from mcp.store.sqlite import POOL_SIZE

    store = SQLiteStore(tmp_path / "orchestrator.db")
    make_task(store, "t0")
    errors: list[BaseException] = []
    start = threading.Barrier(64)

    def use(n: int) -> None:
        try:
            start.wait()
            make_task(store, f"t{n + 1}")
            for _ in range(20):
                assert store.append_event(f"t{n + 1}", "agent_progress", {"n": n}).id >= 1
                assert store.get_task("t0").task_id == "t0"
                with store._tx() as db:  # a read inside a transaction, while other threads want the pool
                    db.execute("UPDATE tasks SET progress = ? WHERE task_id = ?", (n, f"t{n + 1}"))
                    assert store.get_task(f"t{n + 1}").progress == n
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=use, args=(n,)) for n in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads), errors[:3]
    assert 1 <= store._pool.open <= POOL_SIZE
    assert [len(store.events(f"t{n + 1}")) for n in range(64)] == [20] * 64

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    child = ctx.Process(target=_count_in_child, args=(store, results))
    child.start()
    assert results.get(timeout=30) == (1, 66)  # its own first connection, and it sees the parent's rows
    child.join(10)
    store.close()
    assert store._pool.open == 0
