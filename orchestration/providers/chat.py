"""Chat-model providers: the roles of `Provider` written as prompts over one abstract
`complete` call, which each SDK module (OpenAI-compatible, Anthropic) implements."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .. import safejson
from ..errors import ProviderError, UnusableAnswer
from ..interfaces import Meter, ProgressCallback, Provider
from ..models import Hit, Source, Subtask
from .resilience import RETRYABLE_STATUS, Governor, RetryPolicy, call_with_retry, status_of

log = logging.getLogger(__name__)

PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "subtasks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "query": {"type": "string"},
                    "description": {"type": "string"},
                },
                "required": ["title", "query", "description"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["subtasks"],
    "additionalProperties": False,
}

PLANNER_PROMPT = (
    "You are the planner of a research team. Split the user's question into exactly {n} distinct, "
    "non-overlapping subtasks that together answer it. For each give a short title, a search query "
    "and a one-sentence description. Answer with JSON only: "
    '{{"subtasks": [{{"title": "...", "query": "...", "description": "..."}}]}}'
)
WORKER_PROMPT = (
    "You are a research agent. Answer the subtask using only the numbered passages. Cite every claim "
    "with the passage number in square brackets, like [1] or [2][3]. If the passages do not answer it, "
    "say so plainly. Write 3-6 sentences of plain Markdown."
)
SYNTHESIS_PROMPTS = {
    "drummer": (
        "You merge the findings of several research agents into one coherent section. Keep every claim's "
        "citation tags exactly as written ([S1], [S2] ...); never invent a tag. Remove repetition."
    ),
    "camina": (
        "You are the executive synthesizer. Write the final Markdown report answering the question: "
        "start with '## Summary', then '## Findings' with '###' subsections, then '## Gaps' if anything "
        "is unanswered. Keep citation tags exactly as written ([S1], [S2] ...); never invent a tag. "
        "Do not add a title or a sources list."
    ),
}
SUMMARY_PROMPT = (
    "Summarise these search results for the query in Markdown under '## Summary'. Cite results by "
    "their tags exactly as given ([S1], [S2] ...); never invent a tag."
)
MAX_OUTPUT_TOKENS = {"planner": 1200, "worker": 700, "synthesis": 1800}


# What reading an answer that is garbage, of a wrong shape or cut short raises inside an SDK.
UNREADABLE = (ValueError, LookupError, AttributeError, TypeError, RecursionError)


def _count(value: object) -> int:
    """A token count as the server reported it; missing, negative or not a number is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass
class ChatReply:
    text: str
    input_tokens: int
    output_tokens: int
    model: str


DeltaCallback = Callable[[str], Awaitable[None]]


def estimate_tokens(text: str) -> int:
    """A cheap upper-side estimate (about four characters a token) for budget reservations."""
    return len(text) // 3 + 16


class ChatProvider(Provider):
    """Roles as prompts. Subclasses provide `complete` (raising their SDK's own errors), the
    SDK's error classes, and the per-role model names.

    Every call reserves its estimate on the task's meter, goes through the provider's
    governor, is retried on transient errors per `retry`, and is recorded with the usage the
    server reported; a call that fails for good becomes a ProviderError naming the provider."""

    # The SDK's base error class(es), and those of them that mean the connection failed.
    sdk_errors: tuple[type[BaseException], ...] = ()
    connection_errors: tuple[type[BaseException], ...] = ()
    # Prepended to model names in usage and pricing ("ollama/" makes local models free).
    account_prefix: str = ""

    def __init__(self, model: str, planner_model: str = "", worker_model: str = "", synthesis_model: str = "",
                 retry: RetryPolicy | None = None, governor: Governor | None = None):
        self.models = {
            "planner": planner_model or model,
            "worker": worker_model or model,
            "synthesis": synthesis_model or model,
        }
        self.retry = retry or RetryPolicy()
        # design: the catalog hands in one governor per provider per process; a provider
        # built on its own still never has more than this many requests in flight.
        self.governor = governor or Governor(8)

    def transient(self, exc: BaseException) -> bool:
        """Worth retrying: rate limited, overloaded, a 5xx, or the connection failed."""
        status = status_of(exc)
        return status in RETRYABLE_STATUS or (status or 0) >= 500 or isinstance(exc, self.connection_errors)

    @abstractmethod
    async def complete(
        self,
        model: str,
        system: str,
        user: str,
        max_tokens: int,
        json_schema: dict | None = None,
        on_delta: DeltaCallback | None = None,
    ) -> ChatReply:
        """One chat completion. Streams through `on_delta` when given."""

    async def _call(self, role: str, system: str, user: str, meter: Meter, json_schema: dict | None = None,
                    on_delta: DeltaCallback | None = None) -> str:
        model = self.models[role]
        max_tokens = MAX_OUTPUT_TOKENS[role]
        reservation = meter.reserve(self.account_prefix + model, estimate_tokens(system + user), max_tokens)

        async def attempt() -> ChatReply:
            async with self.governor:
                try:
                    return await self.complete(model, system, user, max_tokens, json_schema, on_delta)
                except UNREADABLE as exc:
                    # design: the SDKs parse the answer with the standard library and read it by
                    # attribute; garbage, a wrong shape or a cut stream surfaces as one of these.
                    log.warning("%s gave the %s an answer it cannot read: %s: %s", self.name, role,
                                type(exc).__name__, str(exc)[:200])
                    raise UnusableAnswer(f"{self.name} answered something unusable "
                                         f"({type(exc).__name__})") from None

        try:
            reply = await call_with_retry(attempt, self.retry, self.transient)
        except BaseException as exc:
            # Cancelled, failed for good or refused: nothing was bought, the estimate goes back.
            meter.release(reservation)
            if isinstance(exc, self.sdk_errors):
                raise provider_error(self.name, exc) from None
            raise
        served_by = reply.model if isinstance(reply.model, str) and reply.model else model
        meter.record(reservation, self.account_prefix + served_by, _count(reply.input_tokens),
                     _count(reply.output_tokens))
        return safejson.clean_text(reply.text) if isinstance(reply.text, str) else ""

    async def plan(self, query: str, num_subtasks: int, context: list[Hit], meter: Meter) -> list[Subtask]:
        system = PLANNER_PROMPT.format(n=num_subtasks)
        hints = "\n".join(f"- {h.title}" for h in context[:8])
        user = f"Question: {query}\n\nRelated material found so far:\n{hints or '- (none)'}"
        for attempt in (1, 2):
            try:
                text = await self._call("planner", system, user, meter, PLAN_SCHEMA)
            except UnusableAnswer:
                text = ""
            subtasks = parse_plan(text, num_subtasks)
            if subtasks:
                return subtasks
            log.warning("planner returned an unusable plan (attempt %d)", attempt)
        return fallback_plan(query, num_subtasks)

    async def write_finding(self, subtask: Subtask, passages: list[Hit], meter: Meter,
                            on_progress: ProgressCallback | None = None) -> str:
        numbered = "\n\n".join(
            f"[{i}] {h.title} ({h.url})\n{(h.text or h.snippet)[:1500]}" for i, h in enumerate(passages, start=1)
        )
        user = f"Subtask: {subtask.title}\n{subtask.description}\n\nPassages:\n{numbered or '(no passages found)'}"
        return await self._call("worker", WORKER_PROMPT, user, meter, on_delta=on_progress)

    async def synthesize(self, query: str, level: str, parts: list[tuple[str, str]], meter: Meter) -> str:
        body = "\n\n".join(f"### {label}\n{text}" for label, text in parts)
        return await self._call("synthesis", SYNTHESIS_PROMPTS[level], f"Question: {query}\n\n{body}", meter)

    async def summarize(self, query: str, sources: list[Source], meter: Meter) -> str:
        listing = "\n".join(f"[{s.id}] {s.title} — {s.url}\n{s.snippet}" for s in sources)
        return await self._call("synthesis", SUMMARY_PROMPT, f"Query: {query}\n\nResults:\n{listing}", meter)


def parse_plan(text: str, n: int) -> list[Subtask] | None:
    """Subtasks from the planner's JSON, or None when it is not a usable plan."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        items = safejson.loads(text[start:end + 1]).get("subtasks")
    except (ValueError, AttributeError):
        return None
    if not isinstance(items, list):
        return None
    subtasks = []
    for item in items[:n]:
        if not isinstance(item, dict) or not str(item.get("title", "")).strip():
            return None
        title = str(item["title"]).strip()[:200]
        subtasks.append(Subtask(f"subtask_{len(subtasks) + 1}", title,
                                str(item.get("query") or title).strip()[:300],
                                str(item.get("description", "")).strip()[:500]))
    return subtasks if len(subtasks) == n else None


FALLBACK_ASPECTS = (
    "overview", "how it works", "configuration and setup", "operation and monitoring", "failure modes",
    "security", "performance and limits", "alternatives and trade-offs", "best practices", "background",
    "examples", "open questions", "costs", "tooling", "testing", "deployment", "scaling", "data and state",
    "interfaces", "future directions",
)


def fallback_plan(query: str, n: int) -> list[Subtask]:
    """A safe plan when the planner cannot produce one: the question itself, then aspects of it."""
    subtasks = [Subtask("subtask_1", query[:200], query, "The question as asked.")]
    for aspect in FALLBACK_ASPECTS[: n - 1]:
        subtasks.append(Subtask(f"subtask_{len(subtasks) + 1}", f"{query[:150]} — {aspect}",
                                f"{query} {aspect}", f"The {aspect} of the question."))
    return subtasks[:n]


def provider_error(provider: str, exc: Exception) -> ProviderError:
    """A ProviderError naming the provider and the HTTP status, never the request's headers."""
    status = getattr(exc, "status_code", None)
    detail = f"HTTP {status}" if status else type(exc).__name__
    return ProviderError(f"{provider} request failed: {detail}")

