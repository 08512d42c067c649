"""Chat-model providers: the roles of `Provider` written as prompts over one abstract
`complete` call, which each SDK module (OpenAI-compatible, Anthropic) implements."""

from __future__ import annotations

import json
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .. import safejson
from ..errors import ProviderError, UnusableAnswer
from ..interfaces import ACTIONS, Action, AgentView, Meter, ProgressCallback, Provider
from ..models import Hit, Source, Step, Subtask
from .pools import loop_client
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
        "is unanswered. Findings labelled 'Follow-up (round N)' came from a review round that chased the "
        "gaps of the first: keep that label on their subsections. Keep citation tags exactly as written "
        "([S1], [S2] ...); never invent a tag. Do not add a title or a sources list."
    ),
}
AGENT_PROMPT = (
    "You are a research agent working in steps. Your subtask and the passages your first search found are "
    "below, numbered [1], [2] ...; later searches add passages with the next numbers. Each step, call one "
    "tool: `search` for what the passages do not answer yet (a new query, optionally one source), `read` to "
    "read one of your result URLs in full, `note` to record a finding, or `finish` when the passages "
    "answer the subtask. Finish with `answer`: 3-6 sentences of plain Markdown citing every claim with "
    "its passage number, like [1] or [2][3]; say plainly what the passages do not answer."
)
JSON_ACTIONS = (
    " Tools are not available as functions here: answer with one JSON object only, one of "
    '{"action": "search", "query": "...", "source": "..."}, {"action": "read", "url": "..."}, '
    '{"action": "note", "text": "..."}, {"action": "finish", "answer": "..."}.'
)
REVIEW_PROMPT = (
    "You are the reviewer of a research team. Read the team's findings against the question and name "
    "what is still unanswered, thinly supported or contradictory, as at most {n} short, self-contained "
    "research questions that a new search could answer. Never repeat a question the findings already "
    'answer. Answer with JSON only: {{"gaps": ["..."]}}; an empty list when the findings answer the question.'
)
REVIEW_SCHEMA = {
    "type": "object",
    "properties": {"gaps": {"type": "array", "items": {"type": "string"}}},
    "required": ["gaps"],
    "additionalProperties": False,
}
SUMMARY_PROMPT = (
    "Summarise these search results for the query in Markdown under '## Summary'. Cite results by "
    "their tags exactly as given ([S1], [S2] ...); never invent a tag."
)
MAX_OUTPUT_TOKENS = {"planner": 1200, "reviewer": 600, "worker": 700, "synthesis": 1800}
# The worker agent's tools, in a neutral shape each SDK module wraps in its own wire format.
AGENT_TOOLS: list[dict[str, Any]] = [
    {"name": "search", "description": "Search the sources for a new query; results arrive as numbered passages.",
     "parameters": {"type": "object", "properties": {
         "query": {"type": "string", "description": "What to search for."},
         "source": {"type": "string", "description": "One source name; omit to search them all."}},
         "required": ["query"]}},
    {"name": "read", "description": "Read one URL from your search results in full.",
     "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}},
    {"name": "note", "description": "Record a finding, citing the passages it rests on as [n].",
     "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
    {"name": "finish", "description": "Stop researching and give the finding, citing passages as [n].",
     "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}},
]


@dataclass
class ToolCall:
    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ToolTurn:
    """One earlier step of the agent's conversation: the tool it called and what it was told."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result: str


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
    calls: list[ToolCall] = field(default_factory=list)


class ToolsUnsupported(Exception):
    """The model refused a request because it carried `tools`; the agent falls back to
    choosing its steps as JSON actions."""


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
    # The SDK's async client class and the httpx client class it is given
    # (DefaultAsyncHttpxClient), and the canned answers its warm-up is served from
    # (`canned_transport`); a provider without an SDK client leaves them unset.
    sdk_client: Any = None
    sdk_http_client: Any = None
    warm_reply: bytes = b""
    warm_stream: bytes = b""

    def __init__(self, model: str, planner_model: str = "", worker_model: str = "", synthesis_model: str = "",
                 retry: RetryPolicy | None = None, governor: Governor | None = None, api_key: str = "",
                 base_url: str = "", request_timeout: float = 120.0):
        self._options = {"api_key": api_key or "unused", "base_url": base_url or None, "timeout": request_timeout}
        self._client: Any = None
        self.models = {
            "planner": planner_model or model,
            "reviewer": planner_model or model,
            "worker": worker_model or model,
            "synthesis": synthesis_model or model,
        }
        self.retry = retry or RetryPolicy()
        # design: the catalog hands in one governor per provider per process; a provider
        # built on its own still never has more than this many requests in flight.
        self.governor = governor or Governor(8)
        # design: set False for good the first time the model refuses `tools`, so the other
        # agents of the task do not each pay for the refusal.
        self.native_tools = True

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

    async def complete_tools(self, model: str, system: str, user: str, turns: list[ToolTurn],
                             tools: list[dict[str, Any]], max_tokens: int,
                             on_delta: DeltaCallback | None = None) -> ChatReply:
        """One completion offering `tools` (the model may call one or answer in text), after
        the earlier `turns` replayed in the SDK's own tool-call format; streamed through
        `on_delta` when given. Raises ToolsUnsupported when the model refuses tools; this
        default is for providers without tool calling."""
        raise ToolsUnsupported(self.name)

    def _sdk(self, http_client: Any) -> Any:
        # design: retries are ours (resilience.call_with_retry), so the SDK must not add its own.
        return self.sdk_client(**self._options, max_retries=0, http_client=http_client)

    @property
    def client(self) -> Any:
        """The SDK client, over the connection pool this event loop's providers share."""
        if self._client is None:
            self._client = self._sdk(loop_client(self.sdk_http_client))
        return self._client

    def offline_client(self) -> Any:
        """An SDK client like `client` whose requests are answered in memory with canned
        replies (see `canned_transport`); None for a provider without an SDK client."""
        if self.sdk_client is None:
            return None
        return self._sdk(self.sdk_http_client(transport=canned_transport(self.warm_reply, self.warm_stream)))

    async def aclose(self) -> None:
        # the shared pool stays open for the loop's other tasks
        self._client = None

    async def warm_up(self) -> None:
        """design: an SDK builds its resources, request transforms and response models on
        first use (imports and pydantic schemas: a few tenths of a second on a busy worker,
        once per process), which the first task's planner call used to pay. Each kind of
        call the roles make (structured, streamed, streamed with tools and earlier turns)
        runs once here through the module's own code, answered from memory."""
        offline = self.offline_client()
        if offline is None:
            return
        # the SDKs' connection pools run on anyio, whose asyncio backend is imported at the
        # first connection (tenths of a second on a busy host); the canned calls open none
        import anyio

        await anyio.sleep(0)

        async def ignore(_text: str) -> None:
            return None

        held, self._client = self._client, offline
        model, turn = self.models["worker"], ToolTurn("warm_up", "note", {"text": "warm-up"}, "Noted.")
        try:
            await self.complete(model, "warm-up", "warm-up", 16, PLAN_SCHEMA)
            await self.complete(model, "warm-up", "warm-up", 16, on_delta=ignore)
            await self.complete_tools(model, "warm-up", "warm-up", [turn], AGENT_TOOLS, 16, ignore)
        finally:
            self._client = held
            await offline.close()

    async def _call(self, role: str, system: str, user: str, meter: Meter, json_schema: dict | None = None,
                    on_delta: DeltaCallback | None = None) -> str:
        model = self.models[role]
        return (await self._request(role, system + user, meter, lambda max_tokens: self.complete(
            model, system, user, max_tokens, json_schema, on_delta))).text

    async def _request(self, role: str, prompt: str, meter: Meter,
                       send: Callable[[int], Awaitable[ChatReply]]) -> ChatReply:
        """One accounted, governed, retried request of `role`; `send(max_tokens)` makes it."""
        model = self.models[role]
        max_tokens = MAX_OUTPUT_TOKENS[role]
        reservation = meter.reserve(self.account_prefix + model, estimate_tokens(prompt), max_tokens)

        async def attempt() -> ChatReply:
            async with self.governor:
                try:
                    return await send(max_tokens)
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
        # a model's lone surrogate would fail the next prompt's encoding: cleaned on arrival
        reply.text = safejson.clean_text(reply.text) if isinstance(reply.text, str) else ""
        return reply

    async def next_action(self, view: AgentView, meter: Meter, on_progress: ProgressCallback | None = None) -> Action:
        brief, turns = agent_brief(view), tool_turns(view)
        model = self.models["worker"]
        if self.native_tools:
            prompt = AGENT_PROMPT + brief + "".join(t.result for t in turns)
            try:
                reply = await self._request("worker", prompt, meter, lambda max_tokens: self.complete_tools(
                    model, AGENT_PROMPT, brief, turns, AGENT_TOOLS, max_tokens, on_progress))
            except ToolsUnsupported:
                log.warning("%s model %s refused tools; its agents choose steps as JSON actions", self.name, model)
                self.native_tools = False
            else:
                if reply.calls:
                    return action_from_call(reply.calls[0])
                return Action("finish", text=reply.text)
        text = await self._call("worker", AGENT_PROMPT + JSON_ACTIONS, brief + transcript_text(turns), meter,
                                json_schema=None)
        return parse_json_action(text)

    async def review(self, query: str, findings: list[tuple[str, str]], max_gaps: int, meter: Meter) -> list[str]:
        body = "\n\n".join(f"### {label}\n{text}" for label, text in findings)
        text = await self._call("reviewer", REVIEW_PROMPT.format(n=max_gaps), f"Question: {query}\n\n{body}",
                                meter, REVIEW_SCHEMA)
        return parse_gaps(text, max_gaps)

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
        user = (f"Subtask: {subtask.title}\n{subtask.description}{established_brief(subtask)}\n\n"
                f"Passages:\n{numbered or '(no passages found)'}")
        return await self._call("worker", WORKER_PROMPT, user, meter, on_delta=on_progress)

    async def synthesize(self, query: str, level: str, parts: list[tuple[str, str]], meter: Meter) -> str:
        body = "\n\n".join(f"### {label}\n{text}" for label, text in parts)
        return await self._call("synthesis", SYNTHESIS_PROMPTS[level], f"Question: {query}\n\n{body}", meter)

    async def summarize(self, query: str, sources: list[Source], meter: Meter) -> str:
        listing = "\n".join(f"[{s.id}] {s.title} — {s.url}\n{s.snippet}" for s in sources)
        return await self._call("synthesis", SUMMARY_PROMPT, f"Query: {query}\n\nResults:\n{listing}", meter)


def established_brief(subtask: Subtask) -> str:
    """For a follow-up: what earlier rounds already established, so that the model looks for
    what is missing rather than restating it (empty for a first-round subtask)."""
    if not subtask.known:
        return ""
    lines = "\n".join(f"- {sentence}" for sentence in subtask.known)
    return (f"\n\nAlready established by earlier rounds:\n{lines}\n"
            "Find what is missing: do not restate these; answer with what the passages add to them.")


def agent_brief(view: AgentView) -> str:
    """The agent's first message: its subtask (for a follow-up, with what earlier rounds
    already established) and what its first search (step 1) found."""
    subtask, first = view.subtask, view.steps[0]
    total = view.steps_left + len(view.steps)
    return (f"Subtask: {subtask.title}\n{subtask.description}{established_brief(subtask)}\n\n"
            f"Sources: {', '.join(view.sources)}. "
            f"You have {total - 1} steps after the first search"
            f"{'' if view.can_read else '; reading pages is not available'}.\n\n"
            f"Step 1 searched for: {first.query}\nPassages:\n{first.result}")


def tool_turns(view: AgentView) -> list[ToolTurn]:
    """The steps the model chose (2..n) as tool calls with their results, to replay them."""
    total = view.steps_left + len(view.steps)
    return [ToolTurn(step.call_id or f"step_{step.step}", step.action, step_arguments(step),
                     f"{step.result}\n\n({total - step.step} steps left)") for step in view.steps[1:]]


def step_arguments(step: Step) -> dict[str, Any]:
    if step.action == "search":
        return {"query": step.query or "", **({"source": step.source} if step.source else {})}
    if step.action == "read":
        return {"url": step.url or ""}
    return {"text": step.note or ""}


def transcript_text(turns: list[ToolTurn]) -> str:
    """Earlier steps as text, for a model choosing its steps as JSON actions."""
    if not turns:
        return ""
    lines = ["\n\nSteps so far:"]
    for turn in turns:
        lines.append(f"Action taken: {json.dumps({'action': turn.name, **turn.arguments})}\nResult: {turn.result}")
    return "\n".join(lines)


def action_from_call(call: ToolCall) -> Action:
    args = call.arguments if isinstance(call.arguments, dict) else {}
    name = call.name if call.name in ACTIONS else "finish"

    def text_of(key: str) -> str | None:
        value = args.get(key)
        return str(value) if value is not None else None

    return Action(name, query=text_of("query"), url=text_of("url"), source=text_of("source"),
                  text=text_of("answer") if name == "finish" else text_of("text"), call_id=call.call_id)


def parse_json_action(text: str) -> Action:
    """A JSON action from a model without tool calling; a reply that is not one is its answer."""
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start:end + 1]) if 0 <= start < end else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("action") not in ACTIONS:
        return Action("finish", text=text)
    return action_from_call(ToolCall("", str(data["action"]), data))


def parse_gaps(text: str, n: int) -> list[str]:
    """The reviewer's gaps; an unusable answer names none (the research ends with what it has)."""
    start, end = text.find("{"), text.rfind("}")
    try:
        gaps = json.loads(text[start:end + 1]).get("gaps") if 0 <= start < end else None
    except (ValueError, AttributeError):
        gaps = None
    if not isinstance(gaps, list):
        log.warning("reviewer returned no usable gaps")
        return []
    return [" ".join(str(g).split())[:300] for g in gaps if str(g).strip()][:n]


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


def canned_transport(reply: bytes, stream: bytes, stream_type: str = "text/event-stream") -> Any:
    """An HTTP transport for an SDK client that answers every request in memory: `stream`
    (server-sent events) when the request's JSON asks to stream, else `reply` (JSON)."""
    import httpx2  # the HTTP library both SDKs are built on (imported only for a warm-up)

    def answer(request: httpx2.Request) -> httpx2.Response:
        if json.loads(request.content or b"{}").get("stream"):
            return httpx2.Response(200, content=stream, headers={"content-type": stream_type})
        return httpx2.Response(200, content=reply, headers={"content-type": "application/json"})

    return httpx2.MockTransport(answer)


def provider_error(provider: str, exc: Exception) -> ProviderError:
    """A ProviderError naming the provider and the HTTP status, never the request's headers."""
    status = getattr(exc, "status_code", None)
    detail = f"HTTP {status}" if status else type(exc).__name__
    return ProviderError(f"{provider} request failed: {detail}")

