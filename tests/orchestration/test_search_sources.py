"""The search orchestrator over the real source modules, each pointed at a local fake of its
API: several sources per search, one entry per URL with every finder kept, RRF ranks, a
failing source degrading only its agents, and citations checked against source text."""

from __future__ import annotations

import asyncio

import pytest

from orchestration.budget import UsageMeter
from orchestration.citations import verify_citations
from orchestration.models import Budget, SearchRequest
from orchestration.pricing import PriceTable
from orchestration.providers.extractive import ExtractiveProvider
from orchestration.ranking import RRF_K
from orchestration.search import SearchOrchestrator
from orchestration.sources import create_source
from orchestration.webclient import MemoryCache
from tests.fakes.sources import FakeSources

AGENT_TYPES = ["web", "academic", "encyclopedia", "technical", "news"]


class Events:
    def __init__(self):
        self.events = []

    async def emit(self, event_type, data=None, agent_id=None, progress=None):
        self.events.append((event_type, data or {}, agent_id))


class Checkpoints:
    async def load(self):
        return {}

    async def save(self, key, value):
        pass


@pytest.fixture
def fakes():
    servers = FakeSources().start()
    yield servers
    servers.stop()


def sources_for(fakes, timeout=2.0):
    common = {"cache": MemoryCache(), "retry_wait": 0.01, "timeout": timeout, "attempts": 2}
    return [
        create_source("web", searxng_url=fakes["searxng"].url, **common),
        create_source("wikipedia", base_url=fakes["wikipedia"].url, **common),
        create_source("arxiv", base_url=fakes["arxiv"].url, min_interval=0, **common),
        create_source("semantic_scholar", base_url=fakes["semantic_scholar"].url, min_interval=0, **common),
        create_source("github", api_url=fakes["github"].url, **common),
        create_source("hackernews", base_url=fakes["hackernews"].url, **common),
    ]


def search(sources, events=None):
    orchestrator = SearchOrchestrator(ExtractiveProvider(), sources, events or Events(), Checkpoints(),
                                      UsageMeter(Budget(), PriceTable()))
    request = SearchRequest(query="reciprocal rank fusion for search", num_agents=5, agent_types=AGENT_TYPES,
                            max_results=30)
    return asyncio.run(orchestrator.run(request))


def test_a_five_agent_search_fuses_several_sources_with_provenance_and_rrf_ranks(fakes):
    outcome = search(sources_for(fakes))
    assert not outcome.partial and all(a.status == "completed" for a in outcome.agent_results)
    assert len({s.source for s in outcome.sources}) >= 4
    assert len({fb.source for s in outcome.sources for fb in s.found_by}) == 6

    by_url = {s.url: s for s in outcome.sources}
    paper = by_url["https://arxiv.org/abs/2101.00001"]  # arXiv's feed and Semantic Scholar's arXiv id
    assert {fb.source for fb in paper.found_by} == {"arxiv", "semantic_scholar"}
    article = [s for s in outcome.sources if "Reciprocal_rank_fusion" in s.url]
    assert len(article) == 1  # Wikipedia's URL and SearXNG's www/slash/tracker spelling are one entry
    assert {fb.source for fb in article[0].found_by} == {"wikipedia", "web"}
    repo = [s for s in outcome.sources if s.url == "https://github.com/acme/rank-fusion"][0]
    assert {fb.source for fb in repo.found_by} == {"github", "hackernews"}
    assert len(outcome.sources) == len({s.url for s in outcome.sources})

    for source in outcome.sources:
        assert source.score == pytest.approx(sum(1 / (RRF_K + fb.rank) for fb in source.found_by), abs=1e-6)
    assert [s.rank for s in outcome.sources] == list(range(1, len(outcome.sources) + 1))
    assert [s.score for s in outcome.sources] == sorted((s.score for s in outcome.sources), reverse=True)
    assert outcome.citations["total"] >= 1 and outcome.citations["dropped"] == 0


def test_a_source_that_times_out_or_answers_500_degrades_only_its_agents(fakes):
    fakes["searxng"].state.latency = 1.5
    fakes["arxiv"].state.fail_status = 500
    events = Events()
    outcome = search(sources_for(fakes, timeout=0.3), events)
    assert not outcome.partial and outcome.error is None
    results = {a.agent_type: a for a in outcome.agent_results}
    assert results["web"].status == "failed" and "timed out" in results["web"].error
    assert results["academic"].status == "completed" and "HTTP 500" in results["academic"].error
    assert results["news"].status == "completed"  # web failed, hackernews answered
    assert {r.status for t, r in results.items() if t in ("encyclopedia", "technical")} == {"completed"}
    assert {s.source for s in outcome.sources} >= {"wikipedia", "semantic_scholar", "github", "hackernews"}
    assert "arxiv" not in {fb.source for s in outcome.sources for fb in s.found_by}
    assert [e for e, _, agent in events.events if e == "agent_error"] == ["agent_error"]


def test_a_citation_the_source_does_not_support_is_caught():
    evidence = {"S1": "Reciprocal rank fusion scores each document by the sum of one over k plus its rank.",
                "S2": "arXiv asks API clients to wait three seconds between requests."}
    text = ("Reciprocal rank fusion sums one over k plus the rank of each document [S1]. "
            "The arXiv API answers in under a millisecond and needs no politeness [S1]. "
            "Clients should wait three seconds between arXiv requests [S2]. See also [S7].")
    checked, counts = verify_citations(text, evidence)
    assert counts == {"total": 4, "verified": 2, "dropped": 2}
    assert "document [S1]." in checked and "requests [S2]." in checked
    assert "politeness." in checked and "[S7]" not in checked
