"""The chat providers through their production SDKs (openai, anthropic) against local
servers speaking each wire format: parallel agents, usage as the server counted it,
structured plans, budgets, Retry-After, failing agents, the governor, cancel and timeout."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from orchestration.budget import UsageMeter
from orchestration.errors import OrchestrationError, ProviderError
from orchestration.models import Budget, ResearchRequest, SearchRequest
from orchestration.pricing import PriceTable
from orchestration.providers import create_provider
from orchestration.providers.chat import fallback_plan
from orchestration.providers.resilience import Governor, RetryPolicy
from orchestration.research import ResearchOrchestrator
from orchestration.search import SearchOrchestrator
from orchestration.sources import create_source
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.llm_server import DROPPED, LLMServer, Trick
from tests.fakes.openai_server import FakeServer
from tests.orchestration.sinks import Checkpoints, Events

ROOT = Path(__file__).resolve().parents[2]
QUERY = "How does the orchestrator stream progress and recover tasks after a worker crash?"
FAST_RETRY = RetryPolicy(attempts=4, max_seconds=10.0, backoff_base=0.05, backoff_cap=0.2)
SERVERS = {"openai": FakeServer, "anthropic": FakeAnthropicServer}


@pytest.fixture(scope="module")
def local_source(tmp_path_factory):
    source = create_source("local", docs_dir=str(ROOT / "docs"),
                           index_path=tmp_path_factory.mktemp("index") / "docs_index.db")
    asyncio.run(source.search("warm up the index", 1))  # so no test times the indexing
    return source


@pytest.fixture(params=sorted(SERVERS))
def llm(request):
    server = SERVERS[request.param]().start()
    yield request.param, server
    server.stop()


def provider_for(llm: tuple[str, LLMServer], **config: Any):
    kind, server = llm
    config.setdefault("retry", FAST_RETRY)
    return create_provider(kind, api_key=config.pop("api_key", "sk-test"), base_url=server.base_url, **config)


async def research(provider, source, num_agents: int = 8, budget: Budget | None = None, **request: Any):
    events = Events()
    meter = UsageMeter(budget or Budget(), PriceTable())
    orchestrator = ResearchOrchestrator(provider, [source], events, Checkpoints(), meter)
    try:
        outcome = await orchestrator.run(ResearchRequest(query=QUERY, num_agents=num_agents, **request))
    finally:
        await provider.aclose()
    return outcome, events


def test_agents_run_in_parallel_stream_progress_and_usage_is_what_the_server_counted(llm, local_source):
    kind, server = llm
    server.state.latency = 0.5
    outcome, events = asyncio.run(research(provider_for(llm), local_source))

    calls = server.state.counted()
    assert server.state.max_in_flight >= 8
    # Four rounds of calls (plan, agents, mid-tier syntheses, final) on the server's clock.
    span = calls[-1].at - server.state.arrivals[0]
    assert span < 0.6 * sum(server.state.latency for _ in calls), span
    assert [a.status for a in outcome.agent_results] == ["completed"] * 8 and not outcome.partial
    usage = outcome.usage
    assert usage.llm_calls == len(calls) == 1 + 8 + 2 + 1
    assert usage.input_tokens == sum(c.input_tokens for c in calls)
    assert usage.output_tokens == sum(c.output_tokens for c in calls)
    assert usage.cost_usd > 0 and list(usage.by_model) == [calls[0].model]
    assert sum(a.usage.llm_calls for a in outcome.agent_results) == 8
    assert all(c.stream for c in calls if c.role == "worker")
    progress = events.entries("agent_progress")
    assert {agent for _, _, agent in progress} == {f"agent_{i}" for i in range(1, 9)}
    assert all(data["text"] and data["tokens"] >= 1 for _, data, _ in progress)
    assert "[S1]" in outcome.final_synthesis


def test_search_summary_is_accounted(llm, local_source):
    kind, server = llm

    async def run():
        provider = provider_for(llm)
        meter = UsageMeter(Budget(), PriceTable())
        orchestrator = SearchOrchestrator(provider, [local_source], Events(), Checkpoints(), meter)
        try:
            return await orchestrator.run(SearchRequest(query="gunicorn workers", num_agents=3))
        finally:
            await provider.aclose()

    outcome = asyncio.run(run())
    calls = server.state.counted()
    assert [c.role for c in calls] == ["synthesis"]
    assert (outcome.usage.llm_calls, outcome.usage.input_tokens, outcome.usage.output_tokens) == (
        1, calls[0].input_tokens, calls[0].output_tokens)
    assert "[S1]" in outcome.final_synthesis


def test_planner_asks_for_structured_output_and_an_unusable_plan_is_asked_for_once_more(llm, local_source):
    kind, server = llm
    server.state.bad_plans = 1
    outcome, _ = asyncio.run(research(provider_for(llm), local_source, num_agents=3, enable_drummer=False))
    planner = [c for c in server.state.calls if c.role == "planner"]
    assert len(planner) == 2
    assert [s.title for s in outcome.subtasks] == [f"Aspect {i} of {QUERY[:60]}".strip() for i in (1, 2, 3)]


def test_a_plan_unusable_twice_falls_back_to_a_safe_plan(llm, local_source):
    kind, server = llm
    server.state.bad_plans = 2
    outcome, _ = asyncio.run(research(provider_for(llm), local_source, num_agents=3, enable_drummer=False))
    assert [s.title for s in outcome.subtasks] == [s.title for s in fallback_plan(QUERY, 3)]
    assert all(a.status == "completed" for a in outcome.agent_results)


@pytest.mark.parametrize("limit", ["max_tokens", "max_cost_usd"])
def test_a_budget_stops_the_task_with_a_partial_result_overshooting_at_most_one_call(llm, local_source, limit):
    kind, server = llm
    full, _ = asyncio.run(research(provider_for(llm), local_source))
    per_call = max(c.input_tokens + c.output_tokens for c in server.state.counted())
    server.state.calls.clear()
    total = full.usage.input_tokens + full.usage.output_tokens
    budget = Budget(max_tokens=total // 2) if limit == "max_tokens" else Budget(max_cost_usd=full.usage.cost_usd / 2)

    outcome, events = asyncio.run(research(provider_for(llm), local_source, budget=budget))
    assert outcome.partial and outcome.budget.exhausted
    assert len(events.of("budget_exhausted")) == 1
    assert 0 < outcome.usage.llm_calls < full.usage.llm_calls
    spent = outcome.usage.input_tokens + outcome.usage.output_tokens
    if limit == "max_tokens":
        assert spent <= budget.max_tokens + per_call
    else:
        most_expensive = max(row["cost_usd"] / row["llm_calls"] for row in full.usage.by_model.values())
        assert outcome.usage.cost_usd <= budget.max_cost_usd + 2 * most_expensive
    assert outcome.usage.llm_calls == len(server.state.counted())
    assert outcome.final_synthesis.startswith("# ")


def test_429_with_retry_after_is_waited_out_and_every_agent_completes(llm, local_source):
    kind, server = llm
    server.state.fail_every, server.state.fail_status, server.state.retry_after = 3, 429, "1"
    outcome, events = asyncio.run(research(provider_for(llm), local_source))
    assert not events.of("agent_error") and not outcome.partial
    assert all(a.status == "completed" for a in outcome.agent_results)
    refused = [c for c in server.state.calls if c.status == 429]
    assert refused
    for call in refused:
        retried = [c for c in server.state.calls if c.prompt == call.prompt and c.at > call.at]
        assert retried and retried[0].at - call.at >= 1.0, "Retry-After: 1 was not waited out"
    assert outcome.usage.llm_calls == len(server.state.counted())


def test_retries_are_bounded_in_attempts_and_in_time(llm):
    kind, server = llm

    async def plan(policy: RetryPolicy) -> tuple[str, float]:
        provider = provider_for(llm, retry=policy)
        started = time.monotonic()
        try:
            await provider.plan(QUERY, 2, [], UsageMeter(Budget(), PriceTable()))
        except ProviderError as exc:
            return str(exc), time.monotonic() - started
        finally:
            await provider.aclose()
        raise AssertionError("the call succeeded")

    server.state.fail_every, server.state.fail_status, server.state.retry_after = 1, 503, "0"
    error, _ = asyncio.run(plan(RetryPolicy(attempts=3, max_seconds=10, backoff_base=0.01, backoff_cap=0.02)))
    assert error == f"{kind} request failed: HTTP 503" and server.state.requests == 3

    server.state.requests, server.state.fail_status, server.state.retry_after = 0, 429, "30"
    error, elapsed = asyncio.run(plan(RetryPolicy(attempts=5, max_seconds=2)))
    assert "HTTP 429" in error and server.state.requests == 1 and elapsed < 5


def test_a_failing_agent_is_an_agent_error_and_the_task_completes_from_the_others(llm, local_source):
    kind, server = llm
    server.state.fail_match, server.state.fail_match_status = "Subtask: Aspect 3 of", 500
    outcome, events = asyncio.run(research(provider_for(llm), local_source))
    status = {a.agent_id: a.status for a in outcome.agent_results}
    assert status.pop("agent_3") == "failed" and set(status.values()) == {"completed"}
    (event,) = events.entries("agent_error")
    assert event[2] == "agent_3" and event[1]["error"] == f"{kind} request failed: HTTP 500"
    failed = [c for c in server.state.calls if c.status == 500]
    assert len(failed) == FAST_RETRY.attempts and len({c.prompt for c in failed}) == 1
    assert not outcome.partial and outcome.final_synthesis.startswith("# ")
    assert not events.of("budget_exhausted")


def test_the_governor_caps_requests_in_flight_across_tasks_of_one_process(llm, local_source):
    kind, server = llm
    server.state.latency = 0.1
    governor = Governor(3)

    async def two_tasks():
        return await asyncio.gather(research(provider_for(llm, governor=governor), local_source),
                                    research(provider_for(llm, governor=governor), local_source))

    outcomes = asyncio.run(two_tasks())
    assert server.state.max_in_flight == 3
    assert all(a.status == "completed" for outcome, _ in outcomes for a in outcome.agent_results)


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_close_in_flight_connections_and_start_no_new_request(llm, local_source, how):
    kind, server = llm
    server.state.chunk_delay = 0.5  # worker answers stream slowly: they are mid-stream when stopped

    async def run() -> tuple[float, int]:
        deadline: list[asyncio.Timeout] = []

        async def timed():
            # As the task runtime runs an orchestration: under asyncio.timeout.
            async with asyncio.timeout(None) as timeout:
                deadline.append(timeout)
                return await research(provider_for(llm), local_source)

        task = asyncio.create_task(timed())
        while server.state.in_flight < 8:
            await asyncio.sleep(0.02)
        stopped = time.time()
        if how == "cancel":
            task.cancel()
        else:
            deadline[0].reschedule(asyncio.get_running_loop().time())
        with pytest.raises(asyncio.CancelledError if how == "cancel" else TimeoutError):
            await task
        return stopped, server.state.requests

    stopped, requests = asyncio.run(run())
    assert server.state.wait_idle(5)
    assert len(server.state.disconnects) == 8 and max(server.state.disconnects) - stopped < 2.0
    assert [c.status for c in server.state.calls if c.role == "worker"] == [DROPPED] * 8
    time.sleep(0.5)
    assert server.state.requests == requests == 9


def test_a_wrong_key_is_not_retried_and_the_error_names_the_provider_not_the_key(llm):
    kind, server = llm
    server.state.api_key = "sk-the-right-one"

    async def plan() -> str:
        provider = provider_for(llm, api_key="sk-leak-canary")
        try:
            await provider.plan(QUERY, 2, [], UsageMeter(Budget(), PriceTable()))
        except ProviderError as exc:
            return str(exc)
        finally:
            await provider.aclose()
        raise AssertionError("the call succeeded")

    assert asyncio.run(plan()) == f"{kind} request failed: HTTP 401"
    assert server.state.requests == 1


GARBAGE = {"openai": b'{"choices": []}', "anthropic": b'{"type": "message", "content": "text"}'}


def test_answers_that_cannot_be_read_degrade_the_step_they_served(llm, local_source):
    """Issue 23's fuzz: a 200 whose body is not JSON, or JSON of another shape, used to fail
    the task with 'internal error (JSONDecodeError/IndexError/AttributeError)'."""
    kind, server = llm
    server.state.trick = lambda ask: Trick(raw=GARBAGE[kind] if ask.role != "worker" else b"{") \
        if ask.role in ("planner", "synthesis") else None
    outcome, _ = asyncio.run(research(provider_for(llm), local_source, num_agents=2, enable_drummer=False))
    assert [s.title for s in outcome.subtasks] == [s.title for s in fallback_plan(QUERY, 2)]
    assert all(a.status == "completed" for a in outcome.agent_results)
    assert not outcome.partial and "### " in outcome.final_synthesis  # the findings, unmerged


def test_a_worker_whose_answers_cannot_be_read_is_an_agent_error_naming_the_provider(llm, local_source):
    kind, server = llm
    garbage = b"data: garbage\n\n" if kind == "openai" else b"event: message_start\ndata: garbage\n\n"
    server.state.trick = lambda ask: Trick(raw=garbage) if ask.role == "worker" else None
    with pytest.raises(OrchestrationError, match="every worker agent failed: .* answered something unusable"):
        asyncio.run(research(provider_for(llm), local_source, num_agents=2, enable_drummer=False))


def test_model_text_with_lone_surrogates_is_cleaned_on_arrival(llm, local_source):
    """A lone surrogate in a model's text broke the next request that quoted it (the SDK
    could not encode the prompt) and the store; it arrives as U+FFFD."""
    kind, server = llm
    server.state.trick = lambda ask: Trick(text="finding \ud800 [1]") if ask.role == "worker" else None
    outcome, _ = asyncio.run(research(provider_for(llm), local_source, num_agents=2, enable_drummer=False))
    assert all(a.status == "completed" and "\ufffd" in a.content for a in outcome.agent_results)
    assert "\ud800" not in outcome.final_synthesis


def test_token_counts_a_server_leaves_out_or_makes_negative_count_as_zero(llm):
    kind, server = llm
    body = (b'{"id": "x", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": '
            b'{"role": "assistant", "content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": -5, '
            b'"completion_tokens": null}}') if kind == "openai" else \
        (b'{"type": "message", "role": "assistant", "model": "m", "content": [{"type": "text", "text": "ok"}], '
         b'"usage": {"input_tokens": -5, "output_tokens": 0}}')
    server.state.trick = lambda ask: Trick(raw=body)

    async def summary():
        provider = provider_for(llm)
        meter = UsageMeter(Budget(), PriceTable())
        try:
            return await provider.summarize("q", [], meter), meter.usage
        finally:
            await provider.aclose()

    text, usage = asyncio.run(summary())
    assert text == "ok" and usage.input_tokens == 0 and usage.cost_usd >= 0


def test_warm_up_runs_every_kind_of_call_in_memory_and_the_next_call_goes_to_the_server(llm):
    """Provider.warm_up pays the SDK's first-call work against canned answers: nothing
    reaches the server (a canned answer the SDK could no longer read would raise here),
    and the provider's own client is the one the next call uses."""
    kind, server = llm

    async def warm_then_call():
        provider = provider_for(llm)
        try:
            await provider.warm_up()
            assert server.state.requests == 0
            return await provider.summarize("q", [], UsageMeter(Budget(), PriceTable()))
        finally:
            await provider.aclose()

    assert asyncio.run(warm_then_call())
    assert [call.role for call in server.state.calls] == ["synthesis"]


def test_an_error_the_openai_stream_reports_midway_fails_the_call():
    """The streamed lines are read without the SDK's per-chunk objects; an `error` the
    server sends inside the stream still ends the call as the SDK would (an APIError)."""
    import http.server
    import threading

    import openai

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            piece = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(piece)}\n\n".encode())
            self.wfile.write(b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen: list[str] = []

    async def on_delta(text: str) -> None:
        seen.append(text)

    async def call() -> None:
        provider = create_provider("openai", api_key="k", base_url=f"http://127.0.0.1:{server.server_port}/v1")
        try:
            await provider.complete("m", "system", "user", 50, on_delta=on_delta)
        finally:
            await provider.aclose()

    try:
        with pytest.raises(openai.APIError, match="overloaded"):
            asyncio.run(call())
    finally:
        server.shutdown()
    assert seen == ["partial"]


def test_a_follow_up_agent_is_told_what_earlier_rounds_established():
    from orchestration.interfaces import AgentView
    from orchestration.models import Step, Subtask
    from orchestration.providers.chat import agent_brief

    first = Step(1, "search", query="gamma rotation", hits=1, new_evidence=1, result="[1] Gamma (u)\nGamma rotates.")
    known = ["Gamma keys rotate every 90 days.", "Rotation is logged."]
    follow_up = Subtask("subtask_4", "How is gamma rotated?", "How is gamma rotated?", "Follow-up of round 1",
                        round=2, parent="How is gamma rotated?", known=known)
    brief = agent_brief(AgentView(follow_up, [], [first], ["web"], 2, True))
    assert "Already established by earlier rounds:\n- Gamma keys rotate every 90 days.\n- Rotation is logged.\n" in brief
    assert "Find what is missing" in brief and brief.index("Find what is missing") < brief.index("Step 1 searched")
    planned = Subtask("subtask_1", "How is gamma rotated?", "How is gamma rotated?", "Part 1")
    assert "Already established" not in agent_brief(AgentView(planned, [], [first], ["web"], 2, True))
