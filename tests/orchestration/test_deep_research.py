"""Deep research: worker agents that work in steps (search, read, note, finish) through each
SDK's native tool calling or a JSON fallback, rounds whose reviewer's gaps become follow-up
agents, checkpoints per step, budgets; against local servers speaking the OpenAI and
Anthropic wire formats, and offline on the embedded default over the project's own docs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from orchestration.budget import UsageMeter
from orchestration.interfaces import SearchSource
from orchestration.models import Budget, Hit, ResearchRequest, Subtask, to_dict
from orchestration.pricing import PriceTable
from orchestration.providers import create_provider
from orchestration.providers.extractive import ExtractiveProvider
from orchestration.providers.resilience import RetryPolicy
from orchestration.research import ResearchOrchestrator
from orchestration.sources import create_source
from orchestration.text import claims, strip_citations
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.llm_server import LLMServer
from tests.fakes.openai_server import FakeServer
from tests.orchestration.sinks import Checkpoints, Events

ROOT = Path(__file__).resolve().parents[2]
QUERY = "How are the alpha and beta subsystems configured?"
FAST_RETRY = RetryPolicy(attempts=2, max_seconds=5.0, backoff_base=0.05, backoff_cap=0.1)
SERVERS = {"openai": FakeServer, "anthropic": FakeAnthropicServer}


def slug(text: str) -> str:
    return re.sub(r"\W+", "-", text.lower()).strip("-")[:40]


class WebSource(SearchSource):
    """Three web results per query, each a short snippet, and a record of every query."""

    name = "web"

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        self.queries.append(query)
        return [Hit(f"{query} — page {i}", f"https://example.org/{slug(query)}/{i}",
                    f"Snippet {i} about {query}.", self.name) for i in range(1, 4)]


class Reader:
    def __init__(self) -> None:
        self.urls: list[str] = []

    async def __call__(self, url: str) -> str:
        self.urls.append(url)
        return f"The full page at {url} explains the configuration of the subsystem in detail. " * 5


@pytest.fixture(params=sorted(SERVERS))
def llm(request):
    server = SERVERS[request.param]().start()
    yield request.param, server
    server.stop()


def provider_for(llm: tuple[str, LLMServer]):
    kind, server = llm
    return create_provider(kind, api_key="sk-test", base_url=server.base_url, retry=FAST_RETRY)


def orchestrator(provider, source, events, checkpoints=None, budget=None, reader=None):
    return ResearchOrchestrator(provider, [source], events, checkpoints or Checkpoints(),
                                UsageMeter(budget or Budget(), PriceTable()), read_page=reader)


SCRIPT = [
    {"name": "search", "arguments": {"query": "alpha settings"}},
    {"name": "search", "arguments": {"query": "beta settings", "source": "web"}},
    {"name": "read", "arguments": {"url": "https://example.org/alpha-settings/1"}},
    {"name": "finish", "arguments": {"answer": "Alpha is configured in its settings file [4]. "
                                               "Beta has settings of its own [7]."}},
]


def run_scripted(llm, reject_tools: bool = False):
    _, server = llm
    server.state.worker_script = SCRIPT
    server.state.reject_tools = reject_tools
    source, reader, events = WebSource(), Reader(), Events()

    async def go():
        provider = provider_for(llm)
        try:
            return await orchestrator(provider, source, events, reader=reader).run(ResearchRequest(
                QUERY, num_agents=1, depth=1, max_steps=6, enable_drummer=False))
        finally:
            await provider.aclose()

    return asyncio.run(go()), source, reader, events


def test_scripted_agent_searches_twice_reads_once_and_finishes_with_cited_passages(llm):
    kind, server = llm
    outcome, source, reader, events = run_scripted(llm)
    planned = outcome.subtasks[0].query
    # step 1 is the planner's query; the model's two searches and its one read follow, in order
    assert source.queries == [QUERY, planned, "alpha settings", "beta settings"]  # the planner's context, then steps
    assert reader.urls == ["https://example.org/alpha-settings/1"]
    steps = [(e["step"], e["action"], e.get("query") or e.get("url")) for e in events.of("agent_step")]
    assert steps == [(1, "search", planned), (2, "search", "alpha settings"), (3, "search", "beta settings"),
                     (4, "read", "https://example.org/alpha-settings/1"), (5, "finish", None)]
    assert [e["new_evidence"] for e in events.of("agent_step")][:4] == [3, 3, 3, 1]
    result = outcome.agent_results[0]
    assert [s.action for s in result.steps] == ["search", "search", "search", "read", "finish"]
    assert {c.url for c in result.citations} == {"https://example.org/alpha-settings/1",
                                                 "https://example.org/beta-settings/1"}
    assert "Alpha is configured" in result.content
    worker = [c for c in server.state.counted() if c.role == "worker"]
    assert [c.tool for c in worker] == ["search", "search", "read", "finish"]
    assert [c.step for c in worker] == [0, 1, 2, 3]  # each call carries the tool calls before it
    assert all(c.stream for c in worker)  # tool calls arrive streamed, in pieces, and are put together
    assert outcome.usage.llm_calls == len(server.state.counted()) == 1 + 4 + 1


def test_a_model_that_rejects_tools_chooses_the_same_steps_as_json_actions(llm):
    kind, server = llm
    outcome, source, reader, events = run_scripted(llm, reject_tools=True)
    assert source.queries[2:] == ["alpha settings", "beta settings"]
    assert reader.urls == ["https://example.org/alpha-settings/1"]
    assert [e["action"] for e in events.of("agent_step")] == ["search", "search", "search", "read", "finish"]
    refused = [c for c in server.state.calls if c.status == 400]
    assert len(refused) == 1  # the provider remembers: one refusal, not one per step
    assert {c.url for c in outcome.agent_results[0].citations} == {"https://example.org/alpha-settings/1",
                                                                   "https://example.org/beta-settings/1"}


@pytest.mark.parametrize("cap", [None, 4])
def test_reviewer_gaps_become_follow_up_agents_within_max_agents_total(llm, cap):
    kind, server = llm
    # the first gap repeats a planned subtask's query (the fake planner's "<question> aspect 1")
    server.state.review_gaps = [f"{QUERY} aspect 1", "How is gamma rotated?", "What does delta log?"]
    source, events = WebSource(), Events()

    async def go():
        provider = provider_for(llm)
        try:
            return await orchestrator(provider, source, events).run(ResearchRequest(
                QUERY, num_agents=3, depth=2, max_steps=2, max_agents_total=cap, drummer_group_size=2))
        finally:
            await provider.aclose()

    outcome = asyncio.run(go())
    follow_ups = [s for s in outcome.subtasks if s.round == 2]
    expected = ["How is gamma rotated?", "What does delta log?"][:(cap or 6) - 3]
    assert [s.parent for s in follow_ups] == expected  # the repeat is not run again; the cap holds
    assert len(outcome.agent_results) == len(outcome.subtasks) <= (cap or 6)
    assert [r.round for r in outcome.agent_results] == [1, 1, 1] + [2] * len(expected)
    assert events.of("review_complete") == [{"round": 1, "gaps": server.state.review_gaps}]
    assert [e["round"] for e in events.of("round_start")] == [1, 2]
    assert events.of("round_start")[1]["subtasks"] == [
        {"subtask_id": s.subtask_id, "title": s.title, "parent": s.parent} for s in follow_ups]
    assert [s.query for s in follow_ups] == [q for q in source.queries if q in expected]
    rounds = outcome.final_synthesis.split("## Research rounds", 1)[1].split("## Sources")[0]
    for subtask in follow_ups:  # the report says which findings came from follow-ups, and cites them
        cited = next(r.citations for r in outcome.agent_results if r.subtask_id == subtask.subtask_id)
        tags = "".join(f"[{s.id}]" for s in outcome.sources if s.url in {c.url for c in cited})
        assert cited and f"- Follow-up (round 2): {subtask.parent} {tags}" in rounds
    reviewer = [c for c in server.state.counted() if c.role == "reviewer"]
    assert len(reviewer) == 1
    # each agent's model answered its step 2 in text, streamed: the answer so far is reported live
    streamed = {agent for kind, data, agent in events.log if kind == "agent_progress" and data["text"]}
    assert streamed == {r.agent_id for r in outcome.agent_results}


def test_an_agent_interrupted_in_its_third_step_resumes_there_without_buying_earlier_work(llm):
    """The first run stops while the model is answering step 3 (as a killed worker would);
    a second run over the same checkpoints repeats none of the plan's, the earlier steps' or
    the other calls, and the agent's steps are whole."""
    kind, server = llm
    server.state.worker_script = SCRIPT
    server.state.stall_step, server.state.stall_seconds = 1, 30.0  # the model's call for step 3 hangs
    source, reader, checkpoints = WebSource(), Reader(), Checkpoints()
    request = ResearchRequest(QUERY, num_agents=1, depth=1, max_steps=6, enable_drummer=False)

    async def first_run():
        provider = provider_for(llm)
        task = asyncio.ensure_future(orchestrator(provider, source, Events(), checkpoints, reader=reader).run(request))
        while not (server.state.requests == 3 and server.state.in_flight == 1):
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await provider.aclose()

    asyncio.run(first_run())
    assert len(checkpoints.saved["steps:agent_1"]["steps"]) == 2
    server.state.wait_idle(10)
    server.state.stall_step = -1
    before = [c for c in server.state.calls]
    events = Events()

    async def second_run():
        provider = provider_for(llm)
        try:
            return await orchestrator(provider, source, events, checkpoints, reader=reader).run(request)
        finally:
            await provider.aclose()

    outcome = asyncio.run(second_run())
    after = server.state.calls[len(before):]
    # step 3 (the call that hung) is asked again, then steps 4 and 5 and the synthesis: nothing else
    assert [(c.role, c.step) for c in after] == [("worker", 1), ("worker", 2), ("worker", 3), ("synthesis", 0)]
    answered_before = {c.prompt for c in before if c.status == 200}
    assert not answered_before & {c.prompt for c in after}  # nothing answered before is bought again
    assert [e["step"] for e in events.of("agent_step")] == [3, 4, 5]
    assert [s.action for s in outcome.agent_results[0].steps] == ["search", "search", "search", "read", "finish"]
    assert not outcome.partial and outcome.agent_results[0].citations


def test_max_tokens_ends_a_deep_research_partial_and_exhausted(llm):
    kind, server = llm
    server.state.review_gaps = ["What does delta log?"]
    events = Events()

    async def go():
        provider = provider_for(llm)
        try:
            return await orchestrator(provider, WebSource(), events, budget=Budget(max_tokens=2500)).run(
                ResearchRequest(QUERY, num_agents=3, depth=2, max_steps=3))
        finally:
            await provider.aclose()

    outcome = asyncio.run(go())
    assert outcome.partial and outcome.budget.exhausted
    assert events.of("budget_exhausted")
    assert outcome.usage.input_tokens + outcome.usage.output_tokens <= 2500 + 1200
    assert outcome.usage.llm_calls == len(server.state.counted())


@pytest.fixture(scope="module")
def local_docs(tmp_path_factory):
    source = create_source("local", docs_dir=str(ROOT / "docs"),
                           index_path=tmp_path_factory.mktemp("index") / "docs_index.db")
    asyncio.run(source.search("warm up the index", 1))
    return source


def offline(source, depth: int, query: str, max_steps: int = 4, num_agents: int = 1):
    events = Events()
    outcome = asyncio.run(orchestrator(ExtractiveProvider(), source, events).run(
        ResearchRequest(query, num_agents=num_agents, depth=depth, max_steps=max_steps)))
    return outcome, events


# The first facet's words lead every first-round query to the deployment and service-manager
# documents; how webhook deliveries are signed sits in the HTTP API reference. (Asked as "how
# are webhooks signed", round 1 now quotes the monitoring page's sentence that dead-letter
# alerts are "signed like webhooks (X-Webhook-Signature: sha256=<HMAC ...>)", which answers
# it, so the reviewer rightly names no gap; "webhook deliveries" asks what only the API
# reference states.)
OFFLINE_QUERY = "How do deploy.sh releases roll back, and how are webhook deliveries signed?"


def test_offline_depth_two_finds_evidence_depth_one_missed(local_docs):
    shallow, _ = offline(local_docs, 1, OFFLINE_QUERY)
    deep, events = offline(local_docs, 2, OFFLINE_QUERY)
    gaps = events.of("review_complete")[0]["gaps"]
    assert gaps and all(s.parent in gaps for s in deep.subtasks if s.round == 2)
    section = (ROOT / "docs" / "http-api.md").read_text().split("## Webhook deliveries", 1)[1].split("\n## ")[0]
    assert "HMAC" in section and "X-Webhook-Signature" in section  # where the answer sits
    answer = "docs/http-api.md#webhook-deliveries"
    assert answer not in {s.url for s in shallow.sources}
    assert answer in {s.url for s in deep.sources}
    follow_up = next(r for r in deep.agent_results if r.round == 2)
    assert answer in {c.url for c in follow_up.citations}
    assert "Follow-up (round 2)" in deep.final_synthesis


def test_offline_follow_ups_know_what_round_one_quoted_and_quote_something_else(local_docs):
    outcome, _ = offline(local_docs, 2, OFFLINE_QUERY, num_agents=2)
    round_one = " ".join(r.content for r in outcome.agent_results if r.round == 1)
    stated = {strip_citations(c) for c in claims(round_one)}
    follow_ups = [s for s in outcome.subtasks if s.round == 2]
    assert follow_ups and any(s.known for s in follow_ups)
    assert all(set(s.known) <= stated for s in follow_ups)  # what round 1's findings said, tags removed
    assert all(not s.known for s in outcome.subtasks if s.round == 1)
    for result in (r for r in outcome.agent_results if r.round == 2):
        known = next(s.known for s in follow_ups if s.subtask_id == result.subtask_id)
        assert not {strip_citations(c) for c in claims(result.content)} & set(known)
    for subtask in outcome.subtasks:  # the checkpointed plan and rounds give back the same subtasks
        assert Subtask(**to_dict(subtask)) == subtask


def test_offline_agent_steps_chase_uncovered_terms_and_stop_when_nothing_is_new(local_docs):
    outcome, events = offline(local_docs, 1, "How does the service resume a task after a worker is killed?",
                              max_steps=6)
    steps = outcome.agent_results[0].steps
    assert steps[0].query == outcome.subtasks[0].query and steps[-1].action == "finish"
    searches = [s for s in steps if s.action == "search"]
    assert len({s.query for s in searches}) == len(searches)  # no query asked twice
    assert all(s.new_evidence > 0 for s in searches[:-1])  # it stops after the first step that adds nothing
    assert len(steps) <= 6 + 1
    again, _ = offline(local_docs, 1, "How does the service resume a task after a worker is killed?", max_steps=6)
    assert again.final_synthesis == outcome.final_synthesis  # deterministic


def test_search_depth_two_expands_the_query_and_found_by_records_the_pass(local_docs):
    from orchestration.models import SearchRequest
    from orchestration.search import SearchOrchestrator

    def search(depth: int):
        events, checkpoints = Events(), Checkpoints()
        outcome = asyncio.run(SearchOrchestrator(ExtractiveProvider(), [local_docs], events, checkpoints,
                                                 UsageMeter(Budget(), PriceTable())).run(
            SearchRequest("worker lease expiry", num_agents=2, agent_types=["local"], depth=depth)))
        return outcome, events, checkpoints

    shallow, shallow_events, _ = search(1)
    deep, events, checkpoints = search(2)
    expanded = events.of("round_start")[0]["query"]
    assert expanded.startswith("worker lease expiry ") and len(expanded.split()) > 3
    assert checkpoints.saved["expansion"] == expanded
    assert {f.pass_number for s in shallow.sources for f in s.found_by} == {1}
    passes = {f.pass_number for s in deep.sources for f in s.found_by}
    assert passes == {1, 2}
    only_second = [s for s in deep.sources if {f.pass_number for f in s.found_by} == {2}]
    assert only_second and not {s.url for s in only_second} & {s.url for s in shallow.sources}
    assert not shallow_events.of("round_start")


def test_a_page_two_agents_quote_differently_keeps_both_quotes_as_evidence():
    orchestrator = ResearchOrchestrator(ExtractiveProvider(), [], Events(), Checkpoints(),
                                        UsageMeter(Budget(), PriceTable()))
    for quote in ("First chunk of the section.", "Second chunk of the section.", "First chunk", "Second chunk"):
        orchestrator._add_evidence({"docs/a.md#s": quote})
    held = orchestrator.evidence["docs/a.md#s"]
    assert "First chunk of the section." in held and "Second chunk of the section." in held


def test_malformed_actions_are_refused_steps_and_the_agent_goes_on():
    from orchestration.interfaces import Action

    class Clumsy(ExtractiveProvider):
        """Searches with no query, reads a URL it never found, then finishes."""

        script = [Action("search", query="  "), Action("read", url="https://elsewhere.example/x"), Action("finish")]

        async def next_action(self, view, meter, on_progress=None):
            return self.script[len(view.steps) - 1]

    source, reader, events = WebSource(), Reader(), Events()
    outcome = asyncio.run(orchestrator(Clumsy(), source, events, reader=reader).run(
        ResearchRequest(QUERY, num_agents=1, depth=1, max_steps=6)))
    steps = outcome.agent_results[0].steps
    assert [(s.action, s.new_evidence) for s in steps] == [("search", 3), ("search", 0), ("read", 0), ("finish", 0)]
    assert steps[1].result == "Refused: a search needs a query."
    assert steps[2].result.startswith("Refused: only URLs from your search results")
    assert reader.urls == [] and len(source.queries) == 2  # the planner's context and step 1 only
    assert outcome.agent_results[0].status == "completed" and outcome.agent_results[0].citations


def test_a_second_chunk_of_a_page_the_agent_holds_is_new_evidence_it_can_cite():
    """A long section is several chunks under one URL; a later search that brings another
    chunk of it adds that chunk, and the report's citation of it verifies against it."""
    from orchestration.interfaces import Action

    url = "docs/guide.md#settings"
    chunks = {1: "The first setting turns on compression of stored results in the store.",
              2: "The second setting sets how many retries each webhook delivery gets."}

    class Chunked(SearchSource):
        name = "local"

        async def search(self, query: str, limit: int = 10) -> list[Hit]:
            n = 2 if "second" in query and "first" not in query else 1
            return [Hit("Guide — Settings", url, chunks[n][:40], self.name, text=chunks[n],
                        metadata={"chunk": n})]

    class Scripted(ExtractiveProvider):
        async def next_action(self, view, meter, on_progress=None):
            return Action("search", query="second setting retries") if len(view.steps) == 1 else Action("finish")

    outcome = asyncio.run(orchestrator(Scripted(), Chunked(), Events()).run(
        ResearchRequest("What does the first setting turn on and the second setting set?", num_agents=1,
                        depth=1, max_steps=3)))
    steps = outcome.agent_results[0].steps
    assert [(s.action, s.new_evidence) for s in steps] == [("search", 1), ("search", 1), ("finish", 0)]
    body = outcome.final_synthesis.split("\n## Sources", 1)[0]
    assert "compression of stored results" in body and "retries each webhook delivery" in body
    assert [s.url for s in outcome.sources] == [url]  # one page, one source
    assert outcome.citations["dropped"] == 0 and outcome.citations["verified"] >= 2
