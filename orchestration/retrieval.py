"""Querying several sources at once for one agent; a failing source degrades only itself."""

from __future__ import annotations

import asyncio
import logging

from .interfaces import SearchSource
from .ranking import RankedList

log = logging.getLogger(__name__)


async def query_sources(
    sources: list[SearchSource], query: str, limit: int, agent_id: str
) -> tuple[list[RankedList], dict[str, str]]:
    """Run `query` on every source in parallel. Returns the ranked lists that came back
    and, by source name, the error of each one that did not."""

    async def one(source: SearchSource) -> RankedList:
        return RankedList(agent_id=agent_id, source=source.name, hits=await source.query(query, limit))

    outcomes = await asyncio.gather(*(one(s) for s in sources), return_exceptions=True)
    lists: list[RankedList] = []
    errors: dict[str, str] = {}
    for source, outcome in zip(sources, outcomes):
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            log.warning("source %s failed for %s: %s", source.name, agent_id, outcome)
            errors[source.name] = f"{type(outcome).__name__}: {outcome}"
        else:
            lists.append(outcome)
    return lists, errors
