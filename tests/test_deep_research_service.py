"""Deep research on real gunicorn workers: a worker killed in the middle of an agent's third
step is taken over at that step with nothing bought twice, and a cancel in round 2 stops
every model and source request within a second."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.fakes.sources import FakeSources
from tests.test_service import event_log, start

pytestmark = pytest.mark.slow

QUERY = "How does the orchestrator recover tasks after a worker crash?"
GAP = "How are webhook deliveries signed?"
SCRIPT = [
    {"name": "search", "arguments": {"query": "lease renewal checkpoints"}},
    {"name": "search", "arguments": {"query": "webhook signature HMAC"}},
    {"name": "finish", "arguments": {"answer": "Tasks resume from checkpoints [1]. Deliveries are signed [4]."}},
]


def wait_for(condition, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_worker_killed_in_an_agents_third_step_is_resumed_at_that_step(service_factory, fake_llm):
    state = fake_llm.state
    state.worker_script, state.review_gaps = SCRIPT, [GAP]
    # the round-2 agent's call for its third step (its model's second call) hangs
    state.stall_step, state.stall_seconds, state.stall_match = 1, 120.0, f"Subtask: {GAP}"
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test"})
    handle = start(service, "orchestrate_research", query=QUERY, num_agents=1, depth=2, max_steps=4)
    task_id = handle["task_id"]

    def stalled() -> bool:
        return state.in_flight == 1 and any(e["event_type"] == "agent_step" and e["data"]["step"] == 2
                                            and e["data"]["round"] == 2 for e in event_log(service, task_id))

    wait_for(stalled, what="the round-2 agent's third step")
    pid = int(service.get(f"/tasks/{task_id}").json()["worker"].split(":")[1])
    state.stall_step = -1
    os.kill(pid, signal.SIGKILL)

    final = service.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=120)
    assert final["status"] == "completed", final
    assert final["attempts"] >= 2 and final["worker"].split(":")[1] != str(pid)
    events = event_log(service, task_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    resumed_at = [e["event_type"] for e in events].index("workflow_resumed")
    follow_up = [e for e in events if e["event_type"] == "agent_step" and e["data"]["round"] == 2]
    assert [e["data"]["step"] for e in follow_up] == [1, 2, 3, 4]
    assert [e["data"]["action"] for e in follow_up] == ["search", "search", "search", "finish"]
    assert [e["id"] > events[resumed_at]["id"] for e in follow_up] == [False, False, True, True]
    answered = [c for c in state.calls if c.status == 200]
    by_role = Counter(c.role for c in answered)
    assert by_role["planner"] == 1 and by_role["reviewer"] == 1
    assert len({c.prompt for c in answered}) == len(answered)  # no call answered twice
    # steps 2 and 3 of the round-2 agent: one answered call each, the killed one asked again once
    assert [c.step for c in answered if c.role == "worker"].count(1) == 2  # round 1's and round 2's
    result = service.get(f"/tasks/{task_id}/result").json()
    steps = [s["action"] for s in result["agent_results"][1]["steps"]]
    assert steps == ["search", "search", "search", "finish"] and result["agent_results"][1]["round"] == 2
    assert result["subtasks"][1]["parent"] == GAP


@pytest.mark.serial  # a one-second bound
def test_cancel_in_round_two_stops_model_and_source_requests_within_a_second(service_factory, fake_llm):
    sources = FakeSources().start()
    try:
        state = fake_llm.state
        state.latency, state.review_gaps = 0.4, [GAP, "What does the store keep per task?"]
        service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                                   "OPENAI_API_KEY": "sk-test", **sources.env()})
        handle = start(service, "orchestrate_research", query=QUERY, num_agents=2, depth=2, max_steps=3,
                       sources=["web", "local"])
        task_id = handle["task_id"]
        wait_for(lambda: any(e["event_type"] == "round_start" and e["data"]["round"] == 2
                             for e in event_log(service, task_id)), what="round 2")
        asked = time.monotonic()
        assert service.post(f"/tasks/{task_id}/cancel").status_code == 202
        final = service.wait_status(task_id, {"cancelled", "completed", "failed"}, timeout=10)
        elapsed = time.monotonic() - asked
        assert final["status"] == "cancelled" and elapsed < 1.0, (final, elapsed)
        model_calls, source_calls = state.requests, len(sources["searxng"].requests)
        time.sleep(1.5)
        assert (state.requests, len(sources["searxng"].requests)) == (model_calls, source_calls)
        result = service.get(f"/tasks/{task_id}/result").json()
        assert result["status"] == "cancelled" and result["partial"] is True
        assert {a["round"] for a in result["agent_results"]} <= {1, 2}
        assert [e["event_type"] for e in event_log(service, task_id)][-1] == "workflow_cancelled"
    finally:
        sources.stop()
