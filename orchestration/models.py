"""Dataclasses that cross the orchestration boundary: requests, hits, agent and synthesis
results, usage, events and the result document (DESIGN §6-§8)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
STATUSES = ("pending", "running", "completed", "failed", "cancelled")

EVENT_TYPES = (
    "workflow_start",
    "decomposition_start",
    "decomposition_complete",
    "agent_start",
    "agent_progress",
    "agent_complete",
    "agent_error",
    "agent_step",
    "round_start",
    "round_complete",
    "review_complete",
    "synthesis_start",
    "synthesis_complete",
    "budget_exhausted",
    "workflow_interrupted",
    "workflow_resumed",
    "workflow_complete",
    "workflow_error",
    "workflow_cancelled",
)
TERMINAL_EVENTS = frozenset({"workflow_complete", "workflow_error", "workflow_cancelled"})

SEARCH_AGENT_TYPES = ("web", "academic", "news", "technical", "encyclopedia", "social", "local", "general")
# design: the seed's swarm used media-style agent types; they map onto the closest modern type.
LEGACY_AGENT_TYPES = {"text": "web", "image": "web", "video": "web", "product": "web"}


def now() -> float:
    return time.time()


def to_dict(obj: Any) -> Any:
    """Plain-JSON form of a dataclass tree."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


@dataclass
class OrchestrationRequest:
    """What both orchestrators are asked: the query, who answers it, and its limits."""

    query: str
    title: str | None = None
    provider: str | None = None
    model: str | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    timeout: float = 300


@dataclass
class ResearchRequest(OrchestrationRequest):
    num_agents: int = 8
    enable_drummer: bool = True
    enable_camina: bool = True
    drummer_group_size: int = 5
    sources: list[str] | None = None
    # design: the dataclass defaults are one round of one-search agents (the first round's
    # behaviour); the HTTP/MCP edge applies DESIGN §13's defaults (depth 2, max_steps 4).
    depth: int = 1
    max_steps: int = 1
    max_agents_total: int | None = None  # None: num_agents x depth


@dataclass
class SearchRequest(OrchestrationRequest):
    num_agents: int = 5
    agent_types: list[str] | None = None
    max_results: int = 20
    depth: int = 1


@dataclass
class Hit:
    """One search result as a source returns it."""

    title: str
    url: str
    snippet: str
    source: str
    text: str = ""  # longer passage when the source has one (local docs, fetched pages)
    score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subtask:
    subtask_id: str
    title: str
    query: str
    description: str = ""
    round: int = 1
    parent: str | None = None  # the reviewer's gap this subtask follows up (rounds after the first)
    # What earlier rounds' findings already established about the gap (their sentences, without
    # citation tags): a follow-up looks for what is missing instead of quoting them again.
    known: list[str] = field(default_factory=list)


@dataclass
class Step:
    """One step of a worker agent: the action it chose and what it brought. `hits` counts the
    results (search) or 1 for a page read; `new_evidence` the passages it added that the agent
    did not have yet."""

    step: int
    action: str  # search | read | note | finish
    query: str | None = None
    url: str | None = None
    source: str | None = None
    hits: int = 0
    new_evidence: int = 0
    note: str | None = None
    call_id: str | None = None  # the model's tool-call id, to replay the conversation on resume
    result: str = ""  # what the model was told the action returned


@dataclass
class Citation:
    """A passage an agent cited: `ref` is the local number it used in its text ([1], [2] ...)."""

    ref: int
    title: str
    url: str
    source: str
    snippet: str


@dataclass
class Usage:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, model: str, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        self.llm_calls += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd = round(self.cost_usd + cost_usd, 8)
        row = self.by_model.setdefault(
            model, {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        )
        row["llm_calls"] += 1
        row["input_tokens"] += input_tokens
        row["output_tokens"] += output_tokens
        row["cost_usd"] = round(row["cost_usd"] + cost_usd, 8)

    def merge(self, other: Usage) -> None:
        for model, row in other.by_model.items():
            mine = self.by_model.setdefault(
                model, {"llm_calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
            )
            for key in mine:
                mine[key] = round(mine[key] + row.get(key, 0), 8)
        self.llm_calls += other.llm_calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd = round(self.cost_usd + other.cost_usd, 8)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            llm_calls=int(data.get("llm_calls", 0)),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
            by_model={k: dict(v) for k, v in (data.get("by_model") or {}).items()},
        )


@dataclass
class AgentResult:
    agent_id: str
    subtask_id: str
    agent_type: str
    status: str  # completed | failed | cancelled
    content: str
    citations: list[Citation] = field(default_factory=list)
    execution_time: float = 0.0
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    round: int = 1
    steps: list[Step] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentResult:
        return cls(
            agent_id=data["agent_id"],
            subtask_id=data["subtask_id"],
            agent_type=data["agent_type"],
            status=data["status"],
            content=data.get("content", ""),
            citations=[Citation(**c) for c in data.get("citations", [])],
            execution_time=float(data.get("execution_time", 0.0)),
            usage=Usage.from_dict(data.get("usage")),
            error=data.get("error"),
            round=int(data.get("round", 1)),
            steps=[Step(**s) for s in data.get("steps", [])],
        )


@dataclass
class SynthesisResult:
    synthesis_id: str
    level: str  # drummer (mid-tier) | camina (final)
    content: str
    source_agent_ids: list[str]
    usage: Usage = field(default_factory=Usage)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisResult:
        return cls(
            synthesis_id=data["synthesis_id"],
            level=data["level"],
            content=data["content"],
            source_agent_ids=list(data["source_agent_ids"]),
            usage=Usage.from_dict(data.get("usage")),
        )


@dataclass
class FoundBy:
    agent_id: str
    source: str
    rank: int
    pass_number: int = 1  # search depth 2: 2 when the query-expansion pass found it


@dataclass
class Source:
    """An entry of the result's `sources`: what `[S<n>]` in the text points at."""

    id: str
    title: str
    url: str
    source: str
    snippet: str
    found_by: list[FoundBy] = field(default_factory=list)
    rank: int = 0
    score: float = 0.0


@dataclass
class Budget:
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    exhausted: bool = False


@dataclass
class Outcome:
    """What an orchestrator hands back: the body of the result document."""

    subtasks: list[Subtask] = field(default_factory=list)
    agent_results: list[AgentResult] = field(default_factory=list)
    synthesis_results: list[SynthesisResult] = field(default_factory=list)
    final_synthesis: str = ""
    sources: list[Source] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    budget: Budget = field(default_factory=Budget)
    partial: bool = False
    error: str | None = None
    citations: dict[str, int] = field(default_factory=dict)
