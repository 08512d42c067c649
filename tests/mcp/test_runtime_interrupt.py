"""A store outage inside a running task interrupts it; it never fails it. The case that
failed tasks in CI: an agent's event could not be written (Redis down), and by the time the
runtime wrote the task's end the store was back, so "failed" landed for good. Now the task
hands back its lease and resumes from its checkpoints on the spot."""

from __future__ import annotations

import dataclasses
import subprocess
import time

import redis

from app import create_app


def test_an_outage_mid_task_interrupts_and_resumes_it_and_nothing_fails(settings, redis_server, monkeypatch):
    subprocess.run(["redis-cli", "-u", f"{redis_server}/13", "flushdb"], check=True, capture_output=True)
    app = create_app(dataclasses.replace(settings, store_url=f"{redis_server}/13", llm_provider="extractive"))
    try:
        store = app.extensions["mcp_orchestrator"].store
        real_append = store.append_events
        failed = []

        def append_events(batch):
            # The connection drops exactly as the first agent's completion is written, and
            # Redis is reachable again for whatever comes next.
            if not failed and any(item[1] == "agent_complete" for item in batch):
                failed.append([item[1] for item in batch])
                raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1. Connection refused.")
            return real_append(batch)

        monkeypatch.setattr(store, "append_events", append_events)
        client = app.test_client()
        started = client.post("/tools/orchestrate_research", json={"query": "How do leases and checkpoints work?",
                                                                     "num_agents": 4})
        assert started.status_code == 202, started.get_json()
        task_id = started.get_json()["task_id"]
        deadline = time.monotonic() + 30
        while (doc := client.get(f"/tasks/{task_id}").get_json())["status"] not in ("completed", "failed",
                                                                                     "cancelled"):
            assert time.monotonic() < deadline, doc
            time.sleep(0.05)
        events = client.get(f"/tasks/{task_id}/events").get_json()["events"]
        types = [e["event_type"] for e in events]
        assert failed, "the injected outage never happened"
        assert doc["status"] == "completed", (doc, types)
        assert "workflow_error" not in types and "agent_error" not in types
        assert [e["id"] for e in events] == list(range(1, len(events) + 1))
        interrupted = types.index("workflow_interrupted")
        assert events[interrupted]["data"]["reason"] == "store unavailable"
        assert types[interrupted + 1] == "workflow_resumed"
        result = client.get(f"/tasks/{task_id}/result").get_json()
        assert result["status"] == "completed" and not result["partial"]
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()
