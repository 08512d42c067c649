"""Every HTTP source against a local server speaking its API's wire format: parsed
results, the query parameters the API expects, retries, timeouts, politeness, caching."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from orchestration.errors import SourceError
from orchestration.sources import create_source
from orchestration.webclient import HttpClients, MemoryCache
from tests.fakes import (arxiv_server, brave_server, github_server, hackernews_server, searxng_server,
                         semantic_scholar_server, wikipedia_server)
from tests.fakes.http_fake import FakeApi

FAST = {"retry_wait": 0.01, "timeout": 2.0}


@pytest.fixture
def fake(request):
    server = request.param.server().start()
    yield server
    server.stop()


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("fake", [wikipedia_server], indirect=True)
def test_wikipedia_returns_articles_in_search_order_with_their_intros(fake):
    source = create_source("wikipedia", base_url=fake.url, **FAST)
    hits = run(source.search("reciprocal rank fusion", 2))
    assert [h.title for h in hits] == ["Reciprocal rank fusion", "Information retrieval"]
    assert hits[0].url == "https://en.wikipedia.org/wiki/Reciprocal_rank_fusion"
    assert "k usually set to 60" in hits[0].text and hits[0].source == "wikipedia"
    params = fake.requests[0].params
    assert params["action"] == "query" and params["generator"] == "search" and params["format"] == "json"
    assert params["gsrsearch"] == "reciprocal rank fusion" and params["gsrlimit"] == "2"
    assert "extracts" in params["prop"] and params["explaintext"] == "1"
    assert fake.requests[0].headers["user-agent"].startswith("mcp-orchestrator")


@pytest.mark.parametrize("fake", [arxiv_server], indirect=True)
def test_arxiv_parses_the_atom_feed_and_builds_a_field_query(fake):
    source = create_source("arxiv", base_url=fake.url, min_interval=0, **FAST)
    hits = run(source.search("rank fusion for search", 5))
    assert [h.url for h in hits] == ["https://arxiv.org/abs/2101.00001", "https://arxiv.org/abs/2203.04567"]
    assert hits[0].title == "Rank Fusion for Multi-Agent Search"
    assert hits[0].metadata["authors"] == ["Ada Lovelace", "Alan Turing"]
    assert hits[0].metadata["pdf_url"] == "http://arxiv.org/pdf/2101.00001v2"
    assert "k equal to 60" in hits[0].text
    params = fake.requests[0].params
    assert params["search_query"] == "all:rank AND all:fusion AND all:search"
    assert params["max_results"] == "5" and params["start"] == "0" and params["sortBy"] == "relevance"


@pytest.mark.parametrize("fake", [arxiv_server], indirect=True)
def test_arxiv_waits_its_politeness_interval_between_requests(fake):
    source = create_source("arxiv", base_url=fake.url, min_interval=0.3, cache_ttl=0, **FAST)
    released: list[float] = []
    wait = source.politeness.wait

    async def recorded_wait() -> None:
        await wait()
        released.append(time.monotonic())

    # design: the interval is kept between the moments requests are let go, measured here in
    # the client; arrival times at the server also carry connection set-up and scheduling,
    # which on a loaded machine shrink a gap by more than the interval's slack.
    source.politeness.wait = recorded_wait

    async def three():
        await asyncio.gather(*(source.search(q, 1) for q in ("alpha", "beta", "gamma")))

    run(three())
    assert len(fake.requests) == 3 and len(released) == 3
    # asyncio may wake a timer up to its clock resolution early
    assert all(b - a >= 0.3 - 0.005 for a, b in zip(released, released[1:])), released
    assert create_source("arxiv", base_url=fake.url).describe()["min_interval_seconds"] == 3.0


@pytest.mark.parametrize("fake", [searxng_server], indirect=True)
def test_web_asks_searxng_for_json(fake):
    source = create_source("web", searxng_url=fake.url, **FAST)
    hits = run(source.search("rank fusion", 10))
    assert hits[0].url.startswith("https://www.example.org/blog/rank-fusion")
    assert hits[0].metadata["engines"] == ["duckduckgo", "bing"] and len(hits) == 3
    assert fake.requests[0].path == "/search"
    assert fake.requests[0].params["q"] == "rank fusion" and fake.requests[0].params["format"] == "json"


@pytest.mark.parametrize("fake", [brave_server], indirect=True)
def test_web_uses_brave_with_its_subscription_token(fake):
    source = create_source("web", brave_api_key=brave_server.KEY, brave_api_url=fake.url, **FAST)
    hits = run(source.search("rank fusion", 5))
    assert [h.url for h in hits] == ["https://example.org/blog/rank-fusion", "https://brave.example.net/page"]
    assert hits[0].snippet == "Reciprocal rank fusion merges ranked lists." and "k is usually 60" in hits[0].text
    request = fake.requests[0]
    assert request.headers["x-subscription-token"] == brave_server.KEY
    assert request.params == {"q": "rank fusion", "count": "5"}
    wrong = create_source("web", brave_api_key="nope", brave_api_url=fake.url, **FAST)
    with pytest.raises(SourceError, match="401"):
        run(wrong.search("rank fusion", 5))


def test_web_with_searxng_and_brave_fuses_both_and_survives_one_failing():
    searx, brave = searxng_server.server().start(), brave_server.server().start()
    try:
        source = create_source("web", searxng_url=searx.url, brave_api_key=brave_server.KEY,
                               brave_api_url=brave.url, **FAST)
        urls = [h.url for h in run(source.search("rank fusion", 10))]
        assert urls[0].startswith("https://www.example.org/blog/rank-fusion")  # found by both: first
        assert "https://brave.example.net/page" in urls and len(urls) == 4
        searx.state.fail_status = 503
        assert [h.url for h in run(source.search("other query", 10))][-1] == "https://brave.example.net/page"
    finally:
        searx.stop()
        brave.stop()


@pytest.mark.parametrize("fake", [github_server], indirect=True)
def test_github_searches_repositories_with_the_token(fake):
    source = create_source("github", api_url=fake.url, token="ghp_test", **FAST)
    hits = run(source.search("rank fusion", 1))
    assert [h.url for h in hits] == ["https://github.com/acme/rank-fusion"]
    assert hits[0].title == "acme/rank-fusion" and hits[0].metadata["stars"] == 420
    request = fake.requests[0]
    assert request.path == "/search/repositories" and request.params["q"] == "rank fusion"
    assert request.params["per_page"] == "1"
    assert request.headers["authorization"] == "Bearer ghp_test"
    assert request.headers["accept"] == "application/vnd.github+json"


@pytest.mark.parametrize("fake", [hackernews_server], indirect=True)
def test_hackernews_searches_stories_and_links_ask_hn_to_its_discussion(fake):
    source = create_source("hackernews", base_url=fake.url, **FAST)
    hits = run(source.search("rank fusion", 10))
    assert [h.url for h in hits] == ["https://github.com/acme/rank-fusion",
                                     "https://news.ycombinator.com/item?id=39002"]
    assert hits[0].metadata["points"] == 321
    assert fake.requests[0].path == "/api/v1/search"
    assert fake.requests[0].params == {"query": "rank fusion", "tags": "story", "hitsPerPage": "10"}


@pytest.mark.parametrize("fake", [semantic_scholar_server], indirect=True)
def test_semantic_scholar_maps_arxiv_papers_to_their_arxiv_url(fake):
    source = create_source("semantic_scholar", base_url=fake.url, min_interval=0, **FAST)
    hits = run(source.search("rank fusion", 10))
    assert [h.url for h in hits] == ["https://arxiv.org/abs/2101.00001",
                                     "https://www.semanticscholar.org/paper/d4e5f6"]
    assert hits[1].text == "Simple fusion baselines remain strong."  # the TLDR when there is no abstract
    params = fake.requests[0].params
    assert fake.requests[0].path == "/graph/v1/paper/search" and params["query"] == "rank fusion"
    assert params["limit"] == "10" and "abstract" in params["fields"] and "externalIds" in params["fields"]


@pytest.mark.parametrize("fake", [hackernews_server], indirect=True)
def test_a_500_is_retried_a_bounded_number_of_times_then_reported(fake):
    fake.state.fail_status = 500
    source = create_source("hackernews", base_url=fake.url, attempts=3, **FAST)
    with pytest.raises(SourceError, match="HTTP 500 after 3 attempts"):
        run(source.search("anything", 5))
    assert len(fake.requests) == 3


@pytest.mark.serial  # a sub-second bound
@pytest.mark.parametrize("fake", [hackernews_server], indirect=True)
def test_a_slow_api_times_out(fake):
    fake.state.latency = 1.0
    source = create_source("hackernews", base_url=fake.url, attempts=1, retry_wait=0.01, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(SourceError, match="timed out"):
        run(source.search("anything", 5))
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize("fake", [wikipedia_server], indirect=True)
def test_answers_are_cached_for_a_short_while(fake):
    cache = MemoryCache()
    first = create_source("wikipedia", base_url=fake.url, cache=cache, **FAST)
    second = create_source("wikipedia", base_url=fake.url, cache=cache, **FAST)
    assert run(first.search("fusion", 3)) == run(second.search("fusion", 3))
    assert len(fake.requests) == 1
    run(second.search("another query", 3))
    assert len(fake.requests) == 2


def test_one_client_per_event_loop():
    clients = HttpClients()

    async def pair():
        return clients.client(), clients.client()

    a, b = run(pair())
    c, _ = run(pair())
    assert a is b and a is not c


@pytest.mark.parametrize("name, config, setting", [
    ("wikipedia", {"base_url": ""}, "WIKIPEDIA_API_URL"), ("arxiv", {"base_url": ""}, "ARXIV_API_URL"),
    ("web", {}, "SEARXNG_URL or BRAVE_API_KEY"), ("github", {}, "GITHUB_API_URL or GITHUB_TOKEN"),
    ("hackernews", {"base_url": ""}, "HN_API_URL"), ("semantic_scholar", {"base_url": ""}, "SEMANTIC_SCHOLAR_API_URL"),
])
def test_a_source_without_configuration_is_disabled_and_says_what_to_set(name, config, setting):
    source = create_source(name, **config)
    assert not source.enabled and setting in source.disabled_reason
    assert source.describe()["enabled"] is False


def test_a_field_of_another_type_is_the_sources_error_with_its_last_error_kept():
    """Past the shape checks, a parser that trips over a value of another type (here
    `topics` a number, not a list) still fails only this source, as a SourceError."""
    body = json.dumps({"total_count": 1, "items": [{"html_url": "https://github.com/acme/x", "topics": 5}]})
    fake = FakeApi(lambda request: (200, "application/json", body.encode())).start()
    shared = []

    async def share(name, error):
        shared.append((name, error))

    try:
        source = create_source("github", api_url=fake.url, **FAST)
        source.on_error = share
        with pytest.raises(SourceError, match=r"^github: unexpected answer \(TypeError: "):
            run(source.query("rank fusion"))
    finally:
        fake.stop()
    assert source.last_error["error"].startswith("github: unexpected answer") and shared == [
        ("github", source.last_error)]
