"""The interfaces the orchestrators talk to the world through (CONVENTIONS 5, 7): a
provider that thinks, sources that search, a sink for events, a store for checkpoints."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import SourceError
from .models import Hit, Source, Step, Subtask

log = logging.getLogger(__name__)
# What a parser raises when an answer does not have the shape it reads: the key, index or
# attribute it expected is not there, or a value has another type.
SHAPE_ERRORS = (LookupError, TypeError, AttributeError, ValueError)

ProgressCallback = Callable[[str], Awaitable[None]]


class SearchSource(ABC):
    """A search backend. `enabled` is False when its configuration is missing; the
    reason is then in `disabled_reason` and the source is listed but never queried."""

    name: str = ""
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None
    last_error: dict[str, Any] | None = None  # {"error", "at"} of the latest failed query
    # Called with (source name, last_error) after each failure, e.g. to share it with other processes.
    on_error: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

    @abstractmethod
    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        """Return up to `limit` hits, best first."""

    async def query(self, query: str, limit: int = 10) -> list[Hit]:
        """`search`, as every caller (agents, the source tools) runs it: whatever went wrong
        with the answer is this source's SourceError, never an exception of another kind
        that would cost the caller more than this source; the failure is kept in `last_error`."""
        try:
            return await self.search(query, limit)
        except SourceError as exc:
            error = exc
        except SHAPE_ERRORS as exc:
            # design: a parser that met a shape it does not know; the answer is at fault, and
            # the traceback in the log says where our reading of it stopped.
            log.warning("source %s: unexpected answer", self.name, exc_info=True)
            error = SourceError(f"{self.name}: unexpected answer ({type(exc).__name__}: {exc})")
        self.last_error = {"error": str(error), "at": time.time()}
        if self.on_error is not None:
            await self.on_error(self.name, self.last_error)
        raise error

    async def aclose(self) -> None:
        """Release connections; sources without any keep this default."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
        }


ACTIONS = ("search", "read", "note", "finish")


@dataclass
class Action:
    """A worker agent's next step as its model chose it. `text` is the note of a `note`, or
    the finding itself when a `finish` carries one (else the agent writes it afterwards)."""

    action: str
    query: str | None = None
    url: str | None = None
    source: str | None = None
    text: str | None = None
    call_id: str | None = None


@dataclass
class AgentView:
    """What a worker agent knows when it chooses its next step: its subtask, the passages it
    holds (numbered 1..n in this order), the steps so far and what it may still do."""

    subtask: Subtask
    passages: list[Hit]
    steps: list[Step]
    sources: list[str]
    steps_left: int
    can_read: bool
    read_urls: list[str] = field(default_factory=list)


class Provider(ABC):
    """What the orchestrators ask of a model, by role. Chat-model providers implement
    these with prompts; the offline `extractive` provider with retrieval and ranking.
    Every call is accounted through `meter` (usage, cost and budget)."""

    name: str = ""

    @abstractmethod
    async def plan(self, query: str, num_subtasks: int, context: list[Hit], meter: Meter) -> list[Subtask]:
        """Split `query` into exactly `num_subtasks` subtasks."""

    @abstractmethod
    async def write_finding(
        self,
        subtask: Subtask,
        passages: list[Hit],
        meter: Meter,
        on_progress: ProgressCallback | None = None,
    ) -> str:
        """Answer `subtask` from `passages`, citing them as [1]..[n] in passage order."""

    async def next_action(self, view: AgentView, meter: Meter, on_progress: ProgressCallback | None = None) -> Action:
        """The agent's next step. An answer in text streams through `on_progress`. A provider
        that cannot choose finishes: its agents run the planner's one search and write their
        finding, as a single pass would."""
        return Action("finish")

    async def review(self, query: str, findings: list[tuple[str, str]], max_gaps: int, meter: Meter) -> list[str]:
        """What the (`label`, finding) pairs of a round leave unanswered or contradictory, as
        at most `max_gaps` short research questions; none when the round answers the query."""
        return []

    @abstractmethod
    async def synthesize(self, query: str, level: str, parts: list[tuple[str, str]], meter: Meter) -> str:
        """Merge (`label`, text) parts that cite [S<n>] into one text that keeps the citations.
        `level` is `drummer` (mid-tier) or `camina` (the final Markdown report)."""

    @abstractmethod
    async def summarize(self, query: str, sources: list[Source], meter: Meter) -> str:
        """A cited summary of fused search results, citing them as [S<n>] by their ids."""

    async def warm_up(self) -> None:
        """Pay this process's one-time costs of a first call (lazy imports, request and
        response models) before a task does, without any request leaving the process;
        providers without such costs keep this default."""

    async def aclose(self) -> None:
        """Release connections; providers without any keep this default."""


class Meter(Protocol):
    """Usage accounting and budget guard for one task (see orchestration.budget)."""

    def reserve(self, model: str, estimated_input: int, estimated_output: int) -> Any: ...

    def record(self, reservation: Any, model: str, input_tokens: int, output_tokens: int) -> None: ...

    def release(self, reservation: Any) -> None: ...


class EventSink(Protocol):
    async def emit(
        self,
        event_type: str,
        data: dict[str, Any] | None = None,
        agent_id: str | None = None,
        progress: float | None = None,
    ) -> None: ...


class CheckpointStore(Protocol):
    """Finished work of one task, kept so a resumed task does not buy it again."""

    async def load(self) -> dict[str, Any]: ...

    async def save(self, key: str, value: Any) -> None: ...
