"""Real providers through the running service (issue 4): research and search on the OpenAI
and Anthropic wire formats with usage as the server counted it, budgets, per-call provider
and model, per-role models, and a cancel that drops the upstream connections."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.llm_server import DROPPED, LLMServer
from tests.fakes.openai_server import FakeServer

pytestmark = pytest.mark.slow

QUERY = "How does the orchestrator stream progress over SSE and recover tasks after a worker crash?"
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def fakes() -> Iterator[dict[str, LLMServer]]:
    servers = {"openai": FakeServer().start(), "anthropic": FakeAnthropicServer().start()}
    yield servers
    for server in servers.values():
        server.stop()


def provider_env(kind: str, server: LLMServer) -> dict[str, str]:
    prefix = kind.upper()
    return {"LLM_PROVIDER": kind, f"{prefix}_BASE_URL": server.base_url, f"{prefix}_API_KEY": f"sk-{kind}-test"}


def start(service, tool: str, **args) -> str:
    response = service.post(f"/tools/{tool}", json=args)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def finish(service, task_id: str) -> dict:
    service.wait_status(task_id, TERMINAL, timeout=60)
    return service.get(f"/tasks/{task_id}/result").json()


def events(service, task_id: str) -> list[dict]:
    return service.get(f"/tasks/{task_id}/events").json()["events"]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_research_search_and_a_budget_on_each_wire_format_with_usage_as_the_server_counted(
        service_factory, fakes, kind):
    server = fakes[kind]
    server.state.latency = 0.3
    service = service_factory(provider_env(kind, server))
    research = start(service, "orchestrate_research", query=QUERY, num_agents=8)
    search = start(service, "orchestrate_search", query="gunicorn workers and threads", num_agents=3)
    budgeted = start(service, "orchestrate_research", query=QUERY, num_agents=8, max_tokens=6000)
    results = {task_id: finish(service, task_id) for task_id in (research, search, budgeted)}

    for task_id in (research, search):
        result = results[task_id]
        assert result["status"] == "completed" and result["partial"] is False, result["error"]
        assert result["usage"]["llm_calls"] > 0 and result["usage"]["cost_usd"] > 0
        assert "[S1]" in result["final_synthesis"] and result["sources"]
    assert server.state.max_in_flight >= 8
    assert [a["status"] for a in results[research]["agent_results"]] == ["completed"] * 8
    assert any(e["event_type"] == "agent_progress" and e["data"]["text"] for e in events(service, research))

    limited = results[budgeted]
    assert limited["status"] == "completed" and limited["partial"] is True
    assert limited["budget"] == {"max_cost_usd": None, "max_tokens": 6000, "exhausted": True}
    assert [e["event_type"] for e in events(service, budgeted)].count("budget_exhausted") == 1
    spent = limited["usage"]["input_tokens"] + limited["usage"]["output_tokens"]
    assert spent <= 6000 + max(c.input_tokens + c.output_tokens for c in server.state.counted())

    counted = server.state.counted()
    usages = [r["usage"] for r in results.values()]
    assert sum(u["llm_calls"] for u in usages) == len(counted)
    assert sum(u["input_tokens"] for u in usages) == sum(c.input_tokens for c in counted)
    assert sum(u["output_tokens"] for u in usages) == sum(c.output_tokens for c in counted)
    model = counted[0].model
    assert list(results[research]["usage"]["by_model"]) == [model]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_cancel_mid_call_drops_the_upstream_connections_and_no_request_follows(service_factory, fakes, kind):
    server = fakes[kind]
    server.state.chunk_delay = 1.0  # worker agents' answers stream slowly
    service = service_factory(provider_env(kind, server))
    # one pass (one search, then the streamed finding): the agents' answers are the calls in flight
    task_id = start(service, "orchestrate_research", query=QUERY, num_agents=8, depth=1, max_steps=1)
    deadline = time.monotonic() + 60
    while server.state.in_flight < 8:
        assert time.monotonic() < deadline, (server.state.calls, service.get(f"/tasks/{task_id}").json())
        time.sleep(0.02)
    asked = time.time()
    assert service.post(f"/tasks/{task_id}/cancel").status_code == 202
    final = service.wait_status(task_id, TERMINAL, timeout=5)
    assert final["status"] == "cancelled"

    assert server.state.wait_idle(5)
    assert len(server.state.disconnects) == 8 and max(server.state.disconnects) - asked < 3.0
    assert [c.status for c in server.state.calls if c.role == "worker"] == [DROPPED] * 8
    time.sleep(1.0)
    assert not [t for t in server.state.arrivals if t > asked]
    result = service.get(f"/tasks/{task_id}/result").json()
    assert result["status"] == "cancelled" and result["partial"] is True
    assert result["usage"]["llm_calls"] == len(server.state.counted()) == 1


def test_per_call_provider_and_model_and_per_role_models(service_factory, fakes):
    env = {**provider_env("openai", fakes["openai"]), **provider_env("anthropic", fakes["anthropic"]),
           "LLM_PROVIDER": "openai", "PLANNER_MODEL": "gpt-4o", "WORKER_MODEL": "gpt-4o-mini",
           "SYNTHESIS_MODEL": "gpt-4.1"}
    service = service_factory(env)
    default = start(service, "orchestrate_research", query=QUERY, num_agents=2)
    chosen = start(service, "orchestrate_research", query=QUERY, num_agents=2, provider="anthropic",
                   model="claude-sonnet-4-5")
    refused = service.post("/tools/orchestrate_research", json={"query": QUERY, "provider": "xai"})
    assert refused.status_code == 400 and "XAI_API_KEY" in refused.text

    assert finish(service, default)["status"] == "completed"
    by_role = {(c.role, c.model) for c in fakes["openai"].state.counted()}
    # the reviewer between rounds is a planning role: it uses PLANNER_MODEL
    assert by_role == {("planner", "gpt-4o"), ("reviewer", "gpt-4o"), ("worker", "gpt-4o-mini"),
                       ("synthesis", "gpt-4.1")}
    result = finish(service, chosen)
    assert {c.model for c in fakes["anthropic"].state.counted()} == {"claude-sonnet-4-5"}
    assert list(result["usage"]["by_model"]) == ["claude-sonnet-4-5"]
    assert result["usage"]["cost_usd"] == pytest.approx(
        (result["usage"]["input_tokens"] * 3.0 + result["usage"]["output_tokens"] * 15.0) / 1e6, rel=1e-6)


def test_a_wrong_anthropic_key_fails_the_task_naming_the_provider_and_never_leaks(service_factory, fakes):
    canary = "sk-ant-leak-canary-51d2"
    server = fakes["anthropic"]
    server.state.api_key = "sk-ant-the-right-one"
    service = service_factory({**provider_env("anthropic", server), "ANTHROPIC_API_KEY": canary,
                               "LOG_LEVEL": "debug"})
    task_id = start(service, "orchestrate_research", query=QUERY, num_agents=3)
    result = finish(service, task_id)
    assert result["status"] == "failed" and "anthropic request failed: HTTP 401" in result["error"]
    seen = json.dumps(result) + json.dumps(events(service, task_id)) + service.get("/metrics").text
    time.sleep(0.5)
    seen += service.log_path.read_text()
    assert canary not in seen
