"""Scale-out over Redis (issue 9): two service instances on different ports and data
directories, sharing only Redis, act as one service."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.test_service import QUERY, event_log, sse_events, start

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(service_factory, redis_server, fake_llm, tmp_path, request):
    db = 1 + request.node.name.__hash__() % 14
    subprocess.run(["redis-cli", "-u", f"{redis_server}/{db}", "flushdb"], check=True, capture_output=True)
    fake_llm.state.latency = 0.8
    fake_llm.state.max_concurrency = 2
    env = {"STORE_URL": f"{redis_server}/{db}", "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
           "OPENAI_API_KEY": "sk-test", "WORKERS": "2", "RATE_LIMIT_ORCHESTRATE": "3 per minute"}
    return service_factory(env, tmp_path / "a"), service_factory(env, tmp_path / "b")


def test_a_task_started_on_one_instance_is_served_and_cancelled_by_the_other(pair):
    a, b = pair
    handle = start(a, "orchestrate_research", query=QUERY, num_agents=6)
    task_id = handle["task_id"]
    assert b.get(f"/tasks/{task_id}").json()["task_id"] == task_id
    deadline = time.monotonic() + 30
    while len(event_log(b, task_id)) < 6:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    resumed = b.get(f"/stream/{task_id}", headers={"Last-Event-ID": "3"}, stream=True, timeout=60)
    assert b.post(f"/tasks/{task_id}/cancel").status_code == 202
    events = sse_events(resumed)
    assert [int(e["id"]) for e in events] == list(range(4, 4 + len(events)))
    assert events[-1]["event"] == "workflow_cancelled"
    assert a.get(f"/tasks/{task_id}/result").json()["status"] == "cancelled"


def test_killing_a_whole_instance_lets_the_other_finish_its_task(pair):
    a, b = pair
    handle = start(a, "orchestrate_research", query=QUERY, num_agents=6, enable_drummer=False)
    task_id = handle["task_id"]
    deadline = time.monotonic() + 30
    while True:
        finished = {e["agent_id"] for e in event_log(b, task_id) if e["event_type"] == "agent_complete"}
        if len(finished) >= 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(a.proc.pid, signal.SIGKILL)
    final = b.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=90)
    assert final["status"] == "completed"
    events = event_log(b, task_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    resumed_at = [e["event_type"] for e in events].index("workflow_resumed")
    for agent_id in finished:
        assert not [e for e in events[resumed_at:] if e.get("agent_id") == agent_id]


def test_rate_limits_hold_across_instances(pair):
    a, b = pair
    codes = [s.post("/tools/orchestrate_search", json={"query": f"limits {i}"}).status_code
             for i, s in enumerate((a, b, a, b))]
    assert codes == [202, 202, 202, 429]


def test_redis_outage_is_a_503_and_the_service_recovers_by_itself(service_factory, tmp_path, fake_llm):
    from tests.conftest import free_port

    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
               "--appendonly", "yes", "--appendfsync", "always", "--save", ""]

    def start_redis() -> subprocess.Popen:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    redis_proc = start_redis()
    fake_llm.state.latency = 0.5
    fake_llm.state.max_concurrency = 2
    service = service_factory({"STORE_URL": f"redis://127.0.0.1:{port}/0", "WORKERS": "2", "LLM_PROVIDER": "openai",
                               "OPENAI_BASE_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test"})
    try:
        done = start(service, "orchestrate_search", query="results survive a restart", num_agents=2)
        service.wait_status(done["task_id"], {"completed"})
        running = start(service, "orchestrate_research", query=QUERY, num_agents=6)
        time.sleep(1.0)
        redis_proc.terminate()
        redis_proc.wait(10)
        health = service.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        outage = service.get(f"/tasks/{done['task_id']}")
        assert outage.status_code == 503 and outage.json()["error"] == "unavailable"
        time.sleep(2.0)  # long enough that the running task's agents hit the outage writing events
        redis_proc = start_redis()
        deadline = time.monotonic() + 30
        while service.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert service.get(f"/tasks/{done['task_id']}/result").json()["status"] == "completed"
        final = service.wait_status(running["task_id"], {"completed", "failed", "cancelled"}, timeout=90)
        assert final["status"] == "completed", (final, event_log(service, running["task_id"]))
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
