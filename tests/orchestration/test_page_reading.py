"""Research agents read their best web results in full (AGENT_READ_PAGES) through the
fetch_url page reader: the finding quotes the page, not the snippet; a page the guards
refuse leaves the snippet, without a connection being attempted."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from orchestration.budget import UsageMeter
from orchestration.fetch import PageFetcher
from orchestration.interfaces import SearchSource
from orchestration.models import Budget, Hit, ResearchRequest
from orchestration.pricing import PriceTable
from orchestration.providers import create_provider
from orchestration.research import ResearchOrchestrator
from orchestration.text import relevant_excerpt

PAGE_FACT = "Checkpointed agents are never recomputed after a crash because their findings are stored."
PAGE = ("<html><head><title>Crash recovery</title></head><body><nav>Menu</nav><article><h1>Crash recovery</h1>"
        + "<p>Unrelated filler about the weather and gardening in spring.</p>" * 40
        + f"<p>{PAGE_FACT} The lease expires and another worker resumes the task.</p>"
        + "<p>More filler about cooking pasta and boiling water.</p>" * 40 + "</article></body></html>")


class WebSource(SearchSource):
    """A search source whose hits carry only a short snippet, like a web search API."""

    name = "web"

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        return [Hit(title="Crash recovery", url="https://docs.example.org/recovery",
                    snippet="How crash recovery works.", source="web")]


class ToPage(httpx.AsyncBaseTransport):
    """Answers every request with PAGE, recording the Host it was for (no socket at all)."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.headers["Host"])
        return httpx.Response(200, headers={"Content-Type": "text/html; charset=utf-8"}, content=PAGE.encode())


class NeverConnect(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a refused page was requested: {request.url}")


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []

    async def emit(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                   progress: float | None = None) -> None:
        self.log.append((event_type, data or {}))


class Checkpoints:
    async def load(self) -> dict[str, Any]:
        return {}

    async def save(self, key: str, value: Any) -> None:
        pass


def research(fetcher: PageFetcher, pages: int = 2):
    async def read_page(url: str) -> str:
        return (await fetcher.fetch(url)).text

    orchestrator = ResearchOrchestrator(create_provider("extractive"), [WebSource()], Events(), Checkpoints(),
                                        UsageMeter(Budget(), PriceTable.load(None)), read_page=read_page,
                                        pages_per_agent=pages)
    outcome = asyncio.run(orchestrator.run(ResearchRequest(query="How does crash recovery work?", num_agents=2)))
    return orchestrator, outcome


def test_agents_quote_the_page_they_read_not_the_snippet():
    transport = ToPage()
    fetcher = PageFetcher(resolver=lambda host, port: ["93.184.215.14"], transport=transport)
    orchestrator, _ = research(fetcher)
    findings = " ".join(r.content for r in orchestrator.agent_results.values())
    assert "never recomputed after a crash" in findings
    assert "cooking pasta" not in findings  # the excerpt is the part that bears on the subtask
    assert transport.hosts and set(transport.hosts) == {"docs.example.org"}


def test_a_refused_page_leaves_the_snippet_and_is_never_requested():
    fetcher = PageFetcher(resolver=lambda host, port: ["10.0.0.7"], transport=NeverConnect())
    orchestrator, outcome = research(fetcher)
    assert orchestrator.agent_results and all(r.status == "completed" for r in orchestrator.agent_results.values())
    assert "never recomputed" not in " ".join(r.content for r in orchestrator.agent_results.values())


def test_zero_pages_reads_nothing():
    fetcher = PageFetcher(resolver=lambda host, port: ["93.184.215.14"], transport=NeverConnect())
    orchestrator, _ = research(fetcher, pages=0)
    assert orchestrator.agent_results


def test_relevant_excerpt_keeps_the_best_sentences_in_order():
    text = "Alpha is about cats. Beta covers lease expiry in detail. Gamma is about dogs. Delta: leases renew."
    excerpt = relevant_excerpt(text, "lease expiry renew", 60)
    assert "lease expiry" in excerpt and "cats" not in excerpt
    assert relevant_excerpt("short", "anything", 100) == "short"
