"""Storage that stays bounded (issue 26): checkpoints go when they can no longer be used,
and the retention sweep removes old finished tasks with everything of theirs, on every backend."""

from __future__ import annotations

import json
import time

import pytest

from mcp.settings import Settings, parse_duration
from mcp.store import TaskRecord, open_store


def finished_task(store, task_id, status="completed", owner="alice", created_at=None, checkpoints=True):
    store.create_task(TaskRecord(task_id=task_id, orchestrator="research", query="q", title=None,
                                 params={"query": "q"}, owner=owner, created_at=created_at or time.time()))
    store.claim_task(task_id, "w1", ttl=30)
    store.append_event(task_id, "agent_start", {"n": 1}, worker="w1")
    if checkpoints:
        store.save_checkpoint(task_id, "plan", [{"subtask": 1}])
        store.save_checkpoint(task_id, "agent:agent_1", {"content": "x" * 100})
    if status != "running":
        assert store.finish_task(task_id, "w1", status, {"status": status}, None, "workflow_complete", {})


def test_a_completed_or_cancelled_task_leaves_no_checkpoints_and_a_failed_one_keeps_them(store):
    finished_task(store, "done", "completed")
    finished_task(store, "stopped", "cancelled")
    finished_task(store, "broken", "failed")
    finished_task(store, "busy", "running")
    assert store.load_checkpoints("done") == {}
    assert store.load_checkpoints("stopped") == {}
    assert set(store.load_checkpoints("broken")) == {"plan", "agent:agent_1"}  # a retry resumes from them
    assert set(store.load_checkpoints("busy")) == {"plan", "agent:agent_1"}
    assert store.get_result("done") == {"status": "completed"}


def test_sweep_removes_old_finished_tasks_with_their_records_and_never_a_running_one(store):
    hook = {"id": "wh_1", "owner": "alice", "url": "https://x.example/h", "events": ["*"], "task_id": None,
            "secret": "s" * 32, "created_at": 1.0}
    store.create_webhook(hook)
    for task_id in ("old1", "old2", "failed"):
        finished_task(store, task_id, "failed" if task_id == "failed" else "completed", created_at=time.time() - 5)
        store.enqueue_delivery({"id": f"d_{task_id}", "webhook_id": "wh_1", "task_id": task_id, "event_id": 2,
                                "event_type": "workflow_complete", "payload": "{}",
                                "next_attempt_at": time.time() + 60, "created_at": time.time()})
    finished_task(store, "running", "running", created_at=time.time() - 10)
    time.sleep(0.05)
    cutoff = time.time()
    finished_task(store, "new", "completed")

    removed = store.sweep(cutoff, 0, limit=100)

    assert removed["tasks"] == 3 and removed["deliveries"] == 3
    for task_id in ("old1", "old2", "failed"):
        assert store.get_task(task_id) is None
        assert store.events(task_id) == [] and store.get_result(task_id) is None
        assert store.load_checkpoints(task_id) == {}
    assert store.deliveries("wh_1") == [] and store.due_deliveries(10) == []
    assert store.get_task("running").status == "running"
    assert [e.id for e in store.events("running")] == [1]
    assert set(store.load_checkpoints("running")) == {"plan", "agent:agent_1"}
    assert store.get_task("new").status == "completed"
    assert {t.task_id for t in store.list_tasks()[0]} == {"running", "new"}
    assert {t.task_id for t in store.list_tasks(owner="alice")[0]} == {"running", "new"}
    assert store.get_webhook("wh_1") is not None  # subscriptions belong to their owner, not to a task
    # the same event of a removed task could be queued again: its dedupe mark went with it
    store.create_task(TaskRecord(task_id="old1", orchestrator="research", query="q", title=None,
                                 params={"query": "q"}, owner="alice", created_at=time.time()))
    store.enqueue_delivery({"id": "d_again", "webhook_id": "wh_1", "task_id": "old1", "event_id": 2,
                            "event_type": "workflow_complete", "payload": "{}", "next_attempt_at": time.time(),
                            "created_at": time.time()})
    assert [d["id"] for d in store.deliveries("wh_1")] == ["d_again"]


def test_sweep_works_in_bounded_batches(store):
    for i in range(7):
        finished_task(store, f"t{i}", created_at=time.time() - 5, checkpoints=False)
    cutoff = time.time()
    assert store.sweep(cutoff, 0, limit=3)["tasks"] == 3
    assert store.sweep(cutoff, 0, limit=3)["tasks"] == 3
    assert store.sweep(cutoff, 0, limit=3)["tasks"] == 1
    assert store.sweep(cutoff, 0, limit=3)["tasks"] == 0
    assert store.list_tasks()[0] == []


def test_per_key_cap_removes_each_owners_oldest_finished_tasks(store):
    now = time.time()
    for i in range(5):
        finished_task(store, f"a{i}", owner="alice", created_at=now - 100 + i, checkpoints=False)
    finished_task(store, "a_running", "running", owner="alice", created_at=now - 200, checkpoints=False)
    for i in range(2):
        finished_task(store, f"b{i}", owner="bob", created_at=now - 100 + i, checkpoints=False)

    removed = store.sweep(None, 2, limit=100)

    assert removed["tasks"] == 3
    assert {t.task_id for t in store.list_tasks(owner="alice")[0]} == {"a3", "a4", "a_running"}
    assert {t.task_id for t in store.list_tasks(owner="bob")[0]} == {"b0", "b1"}


def test_sweep_drops_expired_sessions_and_cache_and_size_reports_the_store(store):
    store.save_session("s_old", {"owner": "a"}, ttl=0.05)
    store.save_session("s_live", {"owner": "a"}, ttl=60)
    store.cache_set("k_old", "v", ttl=0.05)
    time.sleep(0.1)
    store.sweep(None, 0, limit=10)
    assert store.get_session("s_old") is None and store.get_session("s_live") == {"owner": "a"}
    assert store.cache_get("k_old") is None
    size = store.size()
    assert size["bytes"] > 0 and size["nearly_full"] is False
    assert size["backend"] in ("sqlite", "redis")


def test_sqlite_gives_freed_pages_back_to_the_disk(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    for i in range(40):
        finished_task(store, f"t{i}", "failed", created_at=time.time() - 5)  # failed: checkpoints stay
        store.save_checkpoint(f"t{i}", "big", "x" * 20000)
    full = store.size()
    assert full["auto_vacuum"] == "incremental"
    store.sweep(time.time(), 0, limit=100)
    emptied = store.size()
    assert emptied["database_bytes"] < full["database_bytes"] / 2  # the file itself, not only free pages
    assert emptied["free_pages"] < 100
    assert store.table_rows()["checkpoints"] == 0


@pytest.mark.parametrize("raw, seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45),
                                          ("2", 2), ("1.5h", 5400), ("0", 0)])
def test_durations_are_read_with_their_unit(raw, seconds):
    assert parse_duration(raw, "TASK_RETENTION") == seconds


@pytest.mark.parametrize("raw", ["30 days", "-1d", "d", "1y", "nan"])
def test_a_bad_duration_is_refused_naming_the_variable(raw):
    with pytest.raises(ValueError, match="TASK_RETENTION"):
        Settings.from_env({"TASK_RETENTION": raw})
    assert Settings.from_env({"TASK_RETENTION": "0"}).task_retention_seconds is None


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_live_service_forgets_old_tasks_and_keeps_running_ones_and_their_streams(
        backend, service_factory, fake_llm, request):
    from tests.test_service import QUERY, sse_events, start

    env = {"TASK_RETENTION": "2s", "SWEEP_INTERVAL": "0.5", "LLM_PROVIDER": "openai",
           "OPENAI_BASE_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test", "RATE_LIMIT_ENABLED": "0"}
    if backend == "redis":
        env["STORE_URL"] = f"{request.getfixturevalue('redis_server')}/3"
        open_store(env["STORE_URL"]).r.flushdb()
    service = service_factory(env)
    finished = [start(service, "orchestrate_search", query=f"retention {i}", num_agents=1)["task_id"]
                for i in range(3)]
    for task_id in finished:
        service.wait_status(task_id, {"completed"})
    fake_llm.state.latency = 1.0  # the next research runs for several seconds, past the retention
    running = start(service, "orchestrate_research", query=QUERY, num_agents=2)["task_id"]
    stream = service.get(f"/stream/{running}", stream=True, timeout=60)

    deadline = time.monotonic() + 30
    while any(service.get(f"/tasks/{t}").status_code != 404 for t in finished):
        assert time.monotonic() < deadline, "the sweep never removed the finished tasks"
        time.sleep(0.3)
    assert service.get(f"/tasks/{finished[0]}/result").status_code == 404
    assert service.get(f"/tasks/{finished[0]}/events").status_code == 404
    assert service.get(f"/tasks/{running}").json()["status"] in ("running", "completed")

    events = sse_events(stream)  # the stream opened before the sweeps runs to the end
    assert events[-1]["event"] == "workflow_complete"
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    store = open_store(env.get("STORE_URL") or f"sqlite:///{service.data_dir}/orchestrator.db")
    assert store.load_checkpoints(running) == {}  # completed: its checkpoints went with its end
    assert store.get_task(running).status == "completed"
    health = service.get("/health").json()
    assert health["checks"]["store"]["size"]["bytes"] > 0
    metrics = service.get("/metrics").text
    assert "store_sweep_runs_total" in metrics and 'store_sweep_removed_total{kind="tasks"}' in metrics


def test_a_result_is_stored_compressed_and_read_back_whole_and_an_older_plain_one_still_reads(store):
    document = {"final_synthesis": "A finding [S1]. " * 400, "sources": [{"id": "S1", "snippet": "x" * 300}] * 20,
                "unicode": "passé – ünïcode ✓", "n": 1.5}
    store.create_task(TaskRecord(task_id="t1", orchestrator="research", query="q", title=None,
                                 params={"query": "q"}, created_at=time.time()))
    store.finish_task("t1", None, "completed", document, None, "workflow_complete", {})
    assert store.get_result("t1") == document
    if hasattr(store, "r"):
        stored = store.r.get(store.RESULT_KEY.format("t1"))
        store.r.set(store.RESULT_KEY.format("t2"), '{"plain": true}')
    else:
        stored = store._row("SELECT result FROM tasks WHERE task_id = 't1'")[0]
        store.create_task(TaskRecord(task_id="t2", orchestrator="research", query="q", title=None,
                                     params={"query": "q"}, created_at=time.time()))
        with store._tx() as db:
            db.execute("UPDATE tasks SET result = ? WHERE task_id = 't2'", ('{"plain": true}',))
    assert len(stored) < len(json.dumps(document)) / 5
    assert store.get_result("t2") == {"plain": True}


def test_a_stopped_runtime_starts_no_sweep_however_long_it_slept(settings):
    """The sweep loop sleeps between sweeps; one that went to sleep before the runtime was
    stopped used to wake and sweep the store once more (in a test, after its store was gone)."""
    import dataclasses

    from app import create_app

    app = create_app(dataclasses.replace(settings, sweep_interval=0.4))
    runtime = app.extensions["mcp_orchestrator"].runtime
    runtime.start()
    swept = []
    real_try_lock = runtime.store.try_lock
    runtime.store.try_lock = lambda *args: swept.append(time.monotonic()) or real_try_lock(*args)
    deadline = time.monotonic() + 10
    while not swept:  # the loop is running and sweeping
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runtime.stop()
    stopped = time.monotonic()
    time.sleep(1.2)  # more than twice the longest sleep of the loop (1.25 x 0.4 s)
    assert [t for t in swept if t > stopped] == []
