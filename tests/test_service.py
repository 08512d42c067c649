"""The service end to end on real gunicorn workers (issue 3): shared tasks across workers,
research to completion with ordered events, SSE resume, a killed worker's task resumed,
cancel that stops work."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mcp.store import TaskRecord, open_store

pytestmark = pytest.mark.slow

QUERY = "How does the orchestrator stream progress over SSE and recover tasks after a worker crash?"


def sse_events(response: requests.Response) -> list[dict]:
    """Parse an SSE body into its events (comments and retry lines skipped)."""
    events, current = [], {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if "data" in current:
                events.append(current)
            current = {}
        elif line.startswith(":") or line.startswith("retry:"):
            continue
        else:
            key, _, value = line.partition(": ")
            current[key] = value
    return events


def start(service, tool: str, **args) -> dict:
    response = service.post(f"/tools/{tool}", json=args)
    assert response.status_code == 202, response.text
    return response.json()


def event_log(service, task_id: str) -> list[dict]:
    return service.get(f"/tasks/{task_id}/events").json()["events"]


def test_requests_on_fresh_connections_reach_several_workers_and_see_the_same_task(service):
    # The kernel hands each new connection to whichever worker accepts first; under
    # concurrent load that is several of them.
    workers: set[str] = set()
    with ThreadPoolExecutor(16) as pool:
        for _ in range(10):
            workers |= set(pool.map(lambda _: service.get("/health").json()["checks"]["runtime"]["worker"],
                                    range(48)))
            if len(workers) >= 2:
                break
    assert len(workers) >= 2, workers
    handle = start(service, "orchestrate_search", query="gunicorn workers and threads", num_agents=3)
    seen = set()
    for _ in range(12):
        status = service.get(handle["status_url"]).json()
        assert status["task_id"] == handle["task_id"]
        seen.add(service.get("/health").json()["checks"]["runtime"]["worker"])
    done = service.wait_status(handle["task_id"], {"completed"})
    results = {json.dumps(service.get(handle["result_url"]).json(), sort_keys=True) for _ in range(8)}
    assert len(results) == 1 and done["status"] == "completed"


@pytest.mark.parametrize("num_agents", [3, 8])
def test_research_completes_with_cited_report_and_ordered_stream(service, num_agents):
    response = service.post("/tools/orchestrate_research", json={"query": QUERY, "num_agents": num_agents,
                                                                 "drummer_group_size": 3, "wait": True},
                            timeout=120)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed" and result["partial"] is False
    # depth defaults to 2: the planner's num_agents subtasks, then at most num_agents follow-ups
    first_round = [s for s in result["subtasks"] if s["round"] == 1]
    assert len(first_round) == num_agents <= len(result["subtasks"]) <= 2 * num_agents
    assert len([a for a in result["agent_results"] if a["status"] == "completed"]) == len(result["subtasks"])
    report = result["final_synthesis"]
    cited = set(re.findall(r"\[(S\d+)\]", report))
    assert cited, report
    assert cited <= {s["id"] for s in result["sources"]}
    assert {s["level"] for s in result["synthesis_results"]} == {"drummer", "camina"}

    stream = service.get(f"/stream/{result['task_id']}", stream=True)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert stream.headers["X-Accel-Buffering"] == "no"
    events = sse_events(stream)
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(1, len(ids) + 1))
    types = [e["event"] for e in events]
    for expected in ("workflow_start", "decomposition_start", "decomposition_complete", "synthesis_start",
                     "synthesis_complete"):
        assert expected in types
    assert types.count("agent_start") == types.count("agent_complete") == len(result["subtasks"])
    assert types.count("review_complete") == 1 and types.count("round_complete") >= 1
    assert types[-1] == "workflow_complete"
    payload = json.loads(events[0]["data"])
    assert payload["task_id"] == result["task_id"] and payload["id"] == 1

    resumed = sse_events(service.get(f"/stream/{result['task_id']}", headers={"Last-Event-ID": "5"}, stream=True))
    assert [int(e["id"]) for e in resumed] == ids[5:]
    by_query = sse_events(service.get(f"/stream/{result['task_id']}?last_event_id=5", stream=True))
    assert [int(e["id"]) for e in by_query] == ids[5:]


def test_live_stream_from_another_worker_sees_every_event_once(service_factory, fake_llm):
    fake_llm.state.latency = 0.3
    fake_llm.state.max_concurrency = 2
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test"})
    handle = start(service, "orchestrate_research", query=QUERY, num_agents=4)
    first = sse_events(service.get(handle["stream_url"], stream=True, timeout=60))
    ids = [int(e["id"]) for e in first]
    assert ids == list(range(1, len(ids) + 1)) and first[-1]["event"] == "workflow_complete"
    assert [e["id"] for e in event_log(service, handle["task_id"])] == ids


def test_killed_worker_task_is_resumed_by_another_without_redoing_agents(service_factory, fake_llm):
    fake_llm.state.latency = 1.0
    fake_llm.state.max_concurrency = 2
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test"})
    handle = start(service, "orchestrate_research", query=QUERY, num_agents=8, enable_drummer=False)
    task_id = handle["task_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finished_before = {e["agent_id"] for e in event_log(service, task_id) if e["event_type"] == "agent_complete"}
        if len(finished_before) >= 2:
            break
        time.sleep(0.05)
    pid = int(service.get(f"/tasks/{task_id}").json()["worker"].split(":")[1])
    os.kill(pid, signal.SIGKILL)
    assert 2 <= len(finished_before) < 8

    final = service.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=90)
    assert final["status"] == "completed", final
    assert final["attempts"] >= 2 and final["worker"].split(":")[1] != str(pid)
    events = event_log(service, task_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    types = [e["event_type"] for e in events]
    assert "workflow_interrupted" in types and "workflow_resumed" in types
    resumed_at = types.index("workflow_resumed")
    for agent_id in finished_before:
        assert [e["event_type"] for e in events if e.get("agent_id") == agent_id].count("agent_complete") == 1
        assert not [e for e in events[resumed_at:] if e.get("agent_id") == agent_id]
    result = service.get(f"/tasks/{task_id}/result").json()
    assert len([a for a in result["agent_results"] if a["status"] == "completed"]) == 8


@pytest.mark.serial  # a one-second bound
def test_cancel_during_large_research_stops_within_a_second_and_nothing_runs_after(service_factory, fake_llm):
    fake_llm.state.latency = 0.5
    fake_llm.state.max_concurrency = 3
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test"})
    handle = start(service, "orchestrate_research", query=QUERY, num_agents=12)
    task_id = handle["task_id"]
    deadline = time.monotonic() + 30
    while not any(e["event_type"] == "agent_complete" for e in event_log(service, task_id)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    asked = time.monotonic()
    response = service.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 202
    final = service.wait_status(task_id, {"cancelled", "completed", "failed"}, timeout=10)
    elapsed = time.monotonic() - asked
    assert final["status"] == "cancelled"
    assert elapsed < 1.0, elapsed
    calls_at_cancel = fake_llm.state.requests
    time.sleep(1.5)
    assert fake_llm.state.requests == calls_at_cancel
    result = service.get(f"/tasks/{task_id}/result").json()
    assert result["status"] == "cancelled" and result["partial"] is True
    assert result["final_synthesis"].startswith("# ")
    events = event_log(service, task_id)
    assert events[-1]["event_type"] == "workflow_cancelled"
    assert service.post(f"/tasks/{task_id}/cancel").status_code == 409


def test_errors_from_the_live_service_are_json(service):
    cases = [
        ("POST", "/tools/orchestrate_research", {"data": "{not json", "headers": {"Content-Type": "application/json"}},
         400),
        ("POST", "/tools/orchestrate_research", {"json": {"query": "ok query", "num_agents": 99}}, 400),
        ("POST", "/tools/nope", {"json": {}}, 404),
        ("GET", "/tasks/research_doesnotexist", {}, 404),
        ("DELETE", "/tasks", {}, 405),
        ("GET", "/no/such/route", {}, 404),
        ("POST", "/tools/orchestrate_search", {"data": "query=x"}, 415),
    ]
    for method, path, kwargs, status in cases:
        response = service.request(method, path, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()["error"]


def test_metrics_from_every_worker_add_up(service):
    # Eight clients at once, so the kernel cannot hand every connection to the same idle worker;
    # rounds go on until the health checks have seen two workers (bounded).
    def one_client(_: int) -> str:
        assert service.get("/tasks").status_code == 200
        return service.get("/health").json()["checks"]["runtime"]["worker"]

    workers: set[str] = set()
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while len(workers) < 2 and sent < 400:
            workers.update(pool.map(one_client, range(8)))
            sent += 8
    assert len(workers) >= 2
    text = service.get("/metrics").text
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("flask_http_request_duration_seconds_count") and 'endpoint="tasks.list_tasks"' in line]
    assert sum(counts) == sent, [line for line in text.splitlines() if "list_tasks" in line]
    search = start(service, "orchestrate_search", query="metrics and health checks", num_agents=2)
    service.wait_status(search["task_id"], {"completed"})
    text = service.get("/metrics").text
    assert 'orchestration_tasks_total{orchestrator="search",status="completed"} 1.0' in text
    assert "streaming_active_connections" in text


def test_sigterm_hands_tasks_back_and_the_restarted_service_finishes_them(service_factory, fake_llm, tmp_path):
    fake_llm.state.latency = 0.8
    fake_llm.state.max_concurrency = 2
    env = {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test"}
    first = service_factory(env, data_dir=tmp_path / "shared")
    handle = start(first, "orchestrate_research", query=QUERY, num_agents=6)
    task_id = handle["task_id"]
    stream = first.get(handle["stream_url"], stream=True, timeout=60)
    deadline = time.monotonic() + 30
    while not any(e["event_type"] == "agent_complete" for e in event_log(first, task_id)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.stop()  # SIGTERM to the whole process group, as systemd does
    tail = sse_events(stream)
    assert tail[-1]["event"] == "reconnect"
    second = service_factory(env, data_dir=tmp_path / "shared")
    final = second.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=90)
    assert final["status"] == "completed"
    events = event_log(second, task_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    types = [e["event_type"] for e in events]
    interrupted = types.index("workflow_interrupted")
    assert events[interrupted]["data"]["reason"] == "worker shutting down"
    assert types[interrupted + 1] == "workflow_resumed"


def test_orchestrate_rate_limit_holds_across_workers(service_factory):
    service = service_factory({"RATE_LIMIT_ORCHESTRATE": "3 per minute"})
    codes = [service.post("/tools/orchestrate_search", json={"query": f"limits {i}", "num_agents": 1}).status_code
             for i in range(4)]
    assert codes == [202, 202, 202, 429]
    refused = service.post("/tools/orchestrate_research", json={"query": "one more"})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"] == "rate_limited"
    assert service.get("/health").status_code == 200


def test_a_wrong_provider_key_fails_the_task_naming_the_provider_and_never_leaks(service_factory, fake_llm):
    canary = "sk-leak-canary-7f3a9c"
    fake_llm.state.api_key = "sk-the-right-one"
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": canary, "LOG_LEVEL": "debug"})
    handle = start(service, "orchestrate_research", query=QUERY, num_agents=3)
    final = service.wait_status(handle["task_id"], {"completed", "failed", "cancelled"}, timeout=60)
    assert final["status"] == "failed"
    result = service.get(handle["result_url"]).json()
    assert "openai" in result["error"] and "401" in result["error"]
    seen = json.dumps(result) + json.dumps(event_log(service, handle["task_id"])) + json.dumps(final)
    seen += service.get("/health").text + service.get("/metrics").text
    time.sleep(0.5)
    seen += service.log_path.read_text()
    assert canary not in seen


def test_a_task_that_crashes_the_runtime_is_failed_after_a_few_attempts_not_retried_forever(service_factory):
    service = service_factory({"LEASE_TTL": "1", "TASK_SCAN_INTERVAL": "0.2"})
    store = open_store(f"sqlite:///{service.data_dir / 'orchestrator.db'}")
    # design: a record no request could create (its params lack the runtime's defaults), so
    # every attempt to run it crashes the runtime itself, as a bug would
    store.create_task(TaskRecord("research_poison", "research", "q", None, {"query": "q"}, created_at=time.time()))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = store.get_task("research_poison")
        if task.status not in ("pending", "running"):
            break
        time.sleep(0.2)
    assert task.status == "failed" and task.attempts == 3, (task.status, task.attempts)
    assert "internal error on 3 attempts" in task.error
    result = service.get("/tasks/research_poison/result").json()
    assert result["status"] == "failed" and result["partial"] is True
