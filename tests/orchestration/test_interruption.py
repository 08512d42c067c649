"""The store going out of reach mid-task is not an agent failure: the orchestrator lets
Interrupted through untouched, and the agents still running are cancelled at once instead
of calling the model on (and spending) for a run that has already ended."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestration.budget import UsageMeter
from orchestration.errors import Interrupted
from orchestration.interfaces import SearchSource
from orchestration.models import Budget, Hit, ResearchRequest, SearchRequest
from orchestration.pricing import PriceTable
from orchestration.providers import create_provider
from orchestration.research import ResearchOrchestrator
from orchestration.search import SearchOrchestrator


class SlowAfterFirst(SearchSource):
    """Answers the planner and the first agent at once; every later agent's search hangs
    until it is cancelled, which it records."""

    name = "local"

    def __init__(self, answered: int) -> None:
        self.answered = answered
        self.cancelled = 0

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        if self.answered > 0:
            self.answered -= 1
            return [Hit(title="Leases", url="local://leases.md", snippet="A lease expires and another worker "
                        "resumes the task from its checkpoints.", source="local")]
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return []


class StoreGoesAway:
    """An event sink whose store is lost at the first event of type `at`, reported the way
    the runtime's sink reports it."""

    def __init__(self, at: str) -> None:
        self.at = at
        self.log: list[str] = []

    async def emit(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                   progress: float | None = None) -> None:
        if event_type == self.at:
            raise Interrupted("the store is unavailable: connection refused")
        self.log.append(event_type)


class Checkpoints:
    async def load(self) -> dict[str, Any]:
        return {}

    async def save(self, key: str, value: Any) -> None:
        pass


def meter() -> UsageMeter:
    return UsageMeter(Budget(), PriceTable.load(None))


async def cancelled_when_interrupted(run: Any, source: SlowAfterFirst) -> int:
    """How many hanging searches had been cancelled by the time the run raised Interrupted."""
    with pytest.raises(Interrupted):
        await asyncio.wait_for(run, 10)
    return source.cancelled


def test_research_is_interrupted_not_failed_and_the_other_agents_stop():
    # The planner's search and one agent's are answered; that agent's first progress event
    # (sent from inside the model call) finds the store gone.
    source, events = SlowAfterFirst(answered=2), StoreGoesAway("agent_progress")
    orchestrator = ResearchOrchestrator(create_provider("extractive"), [source], events, Checkpoints(), meter())
    run = orchestrator.run(ResearchRequest(query="How do leases work?", num_agents=4))
    assert asyncio.run(cancelled_when_interrupted(run, source)) == 3
    assert "agent_error" not in events.log and events.log.count("agent_start") == 4
    assert not [r for r in orchestrator.agent_results.values() if r.status == "failed"]


def test_search_is_interrupted_and_the_other_agents_stop():
    source, events = SlowAfterFirst(answered=1), StoreGoesAway("agent_complete")
    orchestrator = SearchOrchestrator(create_provider("extractive"), [source], events, Checkpoints(), meter())
    run = orchestrator.run(SearchRequest(query="leases", num_agents=3, agent_types=["local", "local", "local"]))
    assert asyncio.run(cancelled_when_interrupted(run, source)) == 2
    assert "agent_error" not in events.log
