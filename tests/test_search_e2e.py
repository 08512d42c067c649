"""End to end: gunicorn with several workers, every network source pointed at a local fake
of its API, one multi-agent search whose fused results carry provenance from many sources."""

from __future__ import annotations

import pytest

from tests.fakes.sources import FakeSources

pytestmark = pytest.mark.slow


@pytest.fixture
def fakes():
    servers = FakeSources().start()
    yield servers
    servers.stop()


def test_a_search_over_the_real_sources_fuses_their_results_with_provenance(service_factory, fakes):
    service = service_factory(fakes.env())
    health = service.get("/health").json()["checks"]["sources"]
    assert {n for n, c in health.items() if c["status"] == "ok"} >= {
        "web", "wikipedia", "arxiv", "semantic_scholar", "github", "hackernews"}

    response = service.post("/tools/orchestrate_search", json={
        "query": "reciprocal rank fusion for search", "num_agents": 6, "wait": True, "max_results": 30,
        "agent_types": ["web", "academic", "encyclopedia", "technical", "news", "text"]}, timeout=60)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed" and not result["partial"]
    assert [a["agent_type"] for a in result["agent_results"]] == [
        "web", "academic", "encyclopedia", "technical", "news", "web"]  # legacy `text` maps to web
    finders = {fb["source"] for s in result["sources"] for fb in s["found_by"]}
    assert finders == {"web", "wikipedia", "arxiv", "semantic_scholar", "github", "hackernews"}
    paper = next(s for s in result["sources"] if s["url"] == "https://arxiv.org/abs/2101.00001")
    assert {fb["source"] for fb in paper["found_by"]} == {"arxiv", "semantic_scholar"}
    assert max(len({fb["agent_id"] for fb in s["found_by"]}) for s in result["sources"]) >= 3
    assert set(result["citations"]) == {"total", "verified", "dropped"}
    assert result["citations"]["verified"] == result["citations"]["total"] - result["citations"]["dropped"]
    # the wikipedia fake saw the MediaWiki parameters, and the store cache spared repeated web searches
    assert fakes["wikipedia"].requests[0].params["generator"] == "search"
    assert len(fakes["searxng"].requests) == 1
