"""A worker agent's bounded step loop: search, read, note, finish.

Step 1 is always the planner's query for the subtask (the planner already chose it, so no
model call is spent on it). Each later step the provider chooses one action from what the
agent holds; the loop runs it against the sources or the page reader and records what it
brought. After every step from the second on the agent's state is checkpointed, so a
resumed agent continues at its next step and never repeats a step that cost a model call."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .budget import ScopedMeter
from .interfaces import Action, AgentView, CheckpointStore, EventSink, ProgressCallback, Provider, SearchSource
from .models import Hit, Step, Subtask, Usage, to_dict
from .ranking import fuse_hits, normalize_url, passage_key
from .retrieval import query_sources
from .text import is_known, relevant_excerpt, split_sentences, tokenize

log = logging.getLogger(__name__)
PageReader = Callable[[str], Awaitable[str]]

HITS_PER_SOURCE = 5
PASSAGES_PER_SEARCH = 6
# design: the passages an agent may hold; a model answers from all of them in one prompt.
MAX_PASSAGES = 18
PAGE_EXCERPT_CHARS = 1500
RESULT_TEXT_CHARS = 700
STATE_KEY = "steps:{}"


def quoted(hit: Hit, page: str, subtask: Subtask) -> Hit | None:
    """The hit with the part of its full page that bears on the subtask in place of its
    snippet, or None when the page says no more than the hit already did."""
    excerpt = relevant_excerpt(page, f"{subtask.title} {subtask.query}", PAGE_EXCERPT_CHARS)
    if len(excerpt) <= len(hit.text or hit.snippet):
        return None
    return dataclasses.replace(hit, text=excerpt, metadata={**hit.metadata, "page_read": True})


def adding(passages: list[Hit], subtask: Subtask) -> list[Hit]:
    """The passages that add to what the subtask already knows. design: for a follow-up a
    passage is new evidence when one of its sentences bears on the subtask (shares a word
    with it) and is not one earlier rounds already quoted; a passage without such a sentence
    is held (context, and it may be cited) but the search that brought only such passages
    brought nothing new."""
    if not subtask.known:
        return passages
    known = [tokenize(sentence) for sentence in subtask.known]
    wanted = set(tokenize(f"{subtask.title} {subtask.query}"))

    def adds(sentence: str) -> bool:
        words = tokenize(sentence)
        return bool(wanted.intersection(words)) and not is_known(words, known)

    return [h for h in passages if any(adds(s) for s in split_sentences(h.text or h.snippet))]


class AgentEvents:
    """One agent's events. design: what only reports (its start, its progress, its steps)
    is sent with `emit_soon` and the agent goes on (searching, streaming, calling the model)
    while the sink writes it; every later event of the agent first waits for that write, so
    the agent's events stay in order and a failed write (a lost lease, the store gone) still
    stops the agent at its next event."""

    def __init__(self, events: EventSink):
        self.events = events
        self._pending: asyncio.Future | None = None

    async def emit(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                   progress: float | None = None) -> None:
        await self.settle()
        await self.events.emit(event_type, data, agent_id, progress)

    async def emit_soon(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                        progress: float | None = None) -> None:
        await self.settle()
        self._pending = asyncio.ensure_future(self.events.emit(event_type, data, agent_id, progress))

    async def settle(self) -> None:
        """Wait until the event sent with `emit_soon` is written."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    def abandon(self) -> None:
        """An agent that stops (cancelled, interrupted, out of budget) no longer waits; the
        write it sent still happens, and its failure, if any, is not reported twice."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.add_done_callback(lambda done: done.cancelled() or done.exception())


@dataclass
class AgentState:
    """An agent between two steps: what it did and the passages it holds."""

    steps: list[Step] = field(default_factory=list)
    passages: list[Hit] = field(default_factory=list)
    source_errors: dict[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)  # the agent's own spend so far

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AgentState:
        data = data or {}
        return cls([Step(**s) for s in data.get("steps", [])], [Hit(**h) for h in data.get("passages", [])],
                   dict(data.get("source_errors", {})), Usage.from_dict(data.get("usage")))

    @property
    def notes(self) -> list[str]:
        return [s.note for s in self.steps if s.action == "note" and s.note]

    @property
    def read_urls(self) -> list[str]:
        return [s.url for s in self.steps if s.action == "read" and s.url]


@dataclass
class StepsOutcome:
    state: AgentState
    answer: str | None  # the finding when the model's finish carried one


class StepLoop:
    """Runs one agent's steps; the orchestrator writes the finding from what it returns."""

    def __init__(self, provider: Provider, sources: list[SearchSource], events: AgentEvents,
                 checkpoints: CheckpointStore, read_page: PageReader | None, max_steps: int):
        self.provider = provider
        self.sources = sources
        self.events = events
        self.checkpoints = checkpoints
        self.read_page = read_page
        self.max_steps = max_steps

    async def run(self, subtask: Subtask, agent_id: str, saved: dict[str, Any] | None,
                  meter: ScopedMeter, on_progress: ProgressCallback | None = None) -> StepsOutcome:
        state = AgentState.from_dict(saved)
        meter.usage = state.usage  # a resumed agent's accounts include its finished steps
        while len(state.steps) < self.max_steps:
            number = len(state.steps) + 1
            if number == 1:
                action = Action("search", query=subtask.query)
            else:
                action = await self.provider.next_action(self._view(subtask, state), meter, on_progress)
            if action.action == "finish":
                return StepsOutcome(state, (action.text or "").strip() or None)
            step = await self._perform(subtask, agent_id, number, action, state)
            state.steps.append(step)
            if number > 1:
                # design: saved before the event, so a step a client saw is never bought twice.
                # Step 1 bought no model call: a resumed agent searches again rather than make
                # every agent of every task wait on one more store write.
                await self.checkpoints.save(STATE_KEY.format(agent_id), to_dict(state))
            await self._announce(subtask, agent_id, step)
        return StepsOutcome(state, None)

    async def announce_finish(self, subtask: Subtask, agent_id: str, state: AgentState) -> Step:
        """The closing step (the finding written) as an event; it is kept in the agent's result."""
        step = Step(len(state.steps) + 1, "finish", hits=len(state.passages))
        await self._announce(subtask, agent_id, step)
        return step

    def _view(self, subtask: Subtask, state: AgentState) -> AgentView:
        return AgentView(subtask, list(state.passages), list(state.steps), [s.name for s in self.sources],
                         self.max_steps - len(state.steps), self.read_page is not None, state.read_urls)

    async def _announce(self, subtask: Subtask, agent_id: str, step: Step) -> None:
        data = {"subtask_id": subtask.subtask_id, "round": subtask.round, "step": step.step,
                "action": step.action, "hits": step.hits, "new_evidence": step.new_evidence}
        if step.query is not None:
            data["query"] = step.query
        if step.url is not None:
            data["url"] = step.url
        if step.source:
            data["source"] = step.source
        await self.events.emit_soon("agent_step", data, agent_id=agent_id)

    async def _perform(self, subtask: Subtask, agent_id: str, number: int, action: Action,
                       state: AgentState) -> Step:
        if action.action == "search":
            if (action.query or "").strip():
                return await self._search(subtask, agent_id, number, action, state)
            return Step(number, "search", query="", call_id=action.call_id, result="Refused: a search needs a query.")
        if action.action == "read":
            if (action.url or "").strip():
                return await self._read(subtask, number, action, state)
            return Step(number, "read", url="", call_id=action.call_id, result="Refused: a read needs a URL.")
        note = (action.text or "").strip()
        return Step(number, "note", note=note[:4000] or None, call_id=action.call_id,
                    result="Noted." if note else "Nothing to note: the note was empty.")

    async def _search(self, subtask: Subtask, agent_id: str, number: int, action: Action, state: AgentState) -> Step:
        query = action.query.strip()[:300]
        chosen = [s for s in self.sources if s.name == action.source] or self.sources
        lists, errors = await query_sources(chosen, query, HITS_PER_SOURCE, agent_id)
        state.source_errors.update(errors)
        found = fuse_hits(lists, PASSAGES_PER_SEARCH)
        held = {passage_key(h) for h in state.passages}
        new = [h for h in found if passage_key(h) not in held][:max(0, MAX_PASSAGES - len(state.passages))]
        first = len(state.passages) + 1
        state.passages.extend(new)
        if new:
            result = "\n\n".join(f"[{n}] {h.title} ({h.url})\n{(h.text or h.snippet)[:RESULT_TEXT_CHARS]}"
                                 for n, h in enumerate(new, start=first))
        else:
            result = "No new results: every result is already among your passages." if found else "No results."
        return Step(number, "search", query=query, source=action.source if len(chosen) == 1 else None,
                    hits=len(found), new_evidence=len(adding(new, subtask)), call_id=action.call_id, result=result)

    async def _read(self, subtask: Subtask, number: int, action: Action, state: AgentState) -> Step:
        url = action.url.strip()
        index = next((i for i, h in enumerate(state.passages) if normalize_url(h.url) == normalize_url(url)), None)
        step = Step(number, "read", url=url, call_id=action.call_id)
        if index is None:
            step.result = "Refused: only URLs from your search results can be read."
            return step
        if not url.startswith(("http://", "https://")):
            step.result = f"Passage [{index + 1}] already holds everything this source offers."
            return step
        if self.read_page is None:  # the operator turned page reading off (AGENT_READ_PAGES=0)
            step.result = "Reading pages is not available here."
            return step
        try:
            text = await self.read_page(url)
        except Exception as exc:  # noqa: BLE001 - the snippet still stands; the model hears why
            log.info("page %s not read: %s", url, exc)
            step.result = f"The page could not be read ({type(exc).__name__})."
            return step
        step.hits = 1
        hit = state.passages[index]
        better = quoted(hit, text, subtask)
        if better is not None:
            state.passages[index] = better
            step.new_evidence = 1
        step.result = f"[{index + 1}] {hit.title} ({hit.url}), read in full:\n{state.passages[index].text}"
        return step
