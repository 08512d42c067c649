"""Marshmallow schemas for every input at the HTTP and MCP edge (DESIGN §6). Unknown
fields, wrong types and out-of-range values are refused naming the field."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validate, validates_schema

from orchestration.models import EVENT_TYPES, LEGACY_AGENT_TYPES, SEARCH_AGENT_TYPES

REPORT_FORMATS = ("md", "html", "pdf", "docx")
STATUSES = ("pending", "running", "completed", "failed", "cancelled")
PROVIDER_NAMES = ("auto", "extractive", "openai", "anthropic", "xai", "groq", "mistral", "openrouter", "ollama")


class Flag(fields.Boolean):
    """A boolean that accepts only JSON true/false, not 0/1 or "yes"."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class OrchestrateCommon(StrictSchema):
    query = fields.String(required=True, validate=validate.Length(min=3, max=2000),
                          metadata={"description": "What to research or search for (alias: task)."})
    title = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    provider = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(PROVIDER_NAMES),
                             metadata={"description": "LLM provider for this task (default: LLM_PROVIDER); "
                                                      "it must be configured."})
    model = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    max_cost_usd = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0, max=10000))
    max_tokens = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=100_000_000))
    timeout = fields.Float(load_default=300, validate=validate.Range(min=10, max=3600),
                           metadata={"description": "Seconds before the task stops with what it has."})
    wait = Flag(load_default=False,
                          metadata={"description": "HTTP only: answer 200 with the result when done."})
    stream = Flag(load_default=False,
                  metadata={"description": "HTTP only: the response is the task's event stream "
                                           "(text/event-stream, as GET /stream/<task_id>); not with wait."})
    wait_seconds = fields.Float(load_default=240, validate=validate.Range(min=0, max=3600),
                               metadata={"description": "How long a waiting call waits before it answers "
                                                        "with the task id to poll."})
    webhook_url = fields.Url(load_default=None, allow_none=True, require_tld=False, schemes={"http", "https"})
    webhook_secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))

    # The seed review's request names -> the fields they stand for. Each alias is listed in
    # the tool's inputSchema beside its field and validated as that field.
    ALIASES: dict[str, str] = {"task": "query"}

    @pre_load
    def resolve_aliases(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        self.aliased: dict[str, str] = {}
        for alias, name in self.ALIASES.items():
            if alias not in data:
                continue
            value = data.pop(alias)
            if name in data and data[name] != value:
                message = f"{alias} is an alias of {name}; they were given different values"
                raise ValidationError({alias: [message], name: [message]})
            data[name] = value
            self.aliased[name] = alias
        return data

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        """Errors about a value sent under an alias name the alias, as the client wrote it."""
        aliased = getattr(self, "aliased", {})
        if aliased and isinstance(error.messages, dict):
            raise ValidationError({aliased.get(k, k): v for k, v in error.messages.items()}) from error
        raise error

    @validates_schema
    def stream_or_wait(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("stream") and data.get("wait"):
            message = "stream and wait cannot both be true: stream answers with the events, wait with the result"
            raise ValidationError({"stream": [message], "wait": [message]})


class ResearchInput(OrchestrateCommon):
    ALIASES = {**OrchestrateCommon.ALIASES, "max_agents": "num_agents", "max_depth": "depth"}

    num_agents = fields.Integer(load_default=8, validate=validate.Range(min=1, max=20))
    enable_drummer = Flag(load_default=True,
                                    metadata={"description": "Run mid-tier synthesizers over groups of agents."})
    enable_camina = Flag(load_default=True, metadata={"description": "Run the final synthesizer."})
    drummer_group_size = fields.Integer(load_default=5, validate=validate.Range(min=2, max=10))
    sources = fields.List(fields.String(validate=validate.Length(min=1, max=40)), load_default=None,
                          allow_none=True, validate=validate.Length(min=1, max=20),
                          metadata={"description": "Source names; default: every enabled source."})
    depth = fields.Integer(load_default=2, validate=validate.Range(min=1, max=3),
                           metadata={"description": "Rounds: after each, a reviewer names what is still "
                                                    "unanswered and follow-up agents research it (1 = one pass; "
                                                    "alias: max_depth)."})
    max_steps = fields.Integer(load_default=4, validate=validate.Range(min=1, max=12),
                               metadata={"description": "Steps per worker agent (search, read, note); "
                                                        "1 = one search, then the finding."})
    max_agents_total = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=60),
                                      metadata={"description": "Hard cap on worker agents across all rounds "
                                                               "(default num_agents x depth)."})


class SearchInput(OrchestrateCommon):
    ALIASES = {**OrchestrateCommon.ALIASES, "max_agents": "num_agents"}

    num_agents = fields.Integer(load_default=5, validate=validate.Range(min=1, max=10))
    agent_types = fields.List(
        fields.String(validate=validate.OneOf(SEARCH_AGENT_TYPES + tuple(LEGACY_AGENT_TYPES))),
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=10),
    )
    max_results = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    depth = fields.Integer(load_default=1, validate=validate.Range(min=1, max=2),
                           metadata={"description": "2 adds a query-expansion pass with terms of the fused "
                                                    "top results; found_by records the pass."})

    @post_load
    def map_legacy_types(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        if data.get("agent_types"):
            data["agent_types"] = [LEGACY_AGENT_TYPES.get(t, t) for t in data["agent_types"]]
        return data


class TaskIdInput(StrictSchema):
    task_id = fields.String(required=True, validate=validate.Length(min=1, max=100))


class ResultInput(TaskIdInput):
    format = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(REPORT_FORMATS),
                           metadata={"description": "Omit for the result document (JSON); md, html, pdf or docx for "
                                                    "the report as a document (PDF and Word as a base64 blob)."})
    partial = Flag(load_default=False, metadata={"description": "With format, for a task still running: the "
                                                                "report so far instead of an error."})


class StatusInput(TaskIdInput):
    include_events = Flag(load_default=False)


class ListTasksInput(StrictSchema):
    status = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(STATUSES))
    orchestrator = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(("research", "search")))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class ListDeadLettersInput(StrictSchema):
    kind = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(("task", "webhook")))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))


class EmptyInput(StrictSchema):
    pass


class EventsQuery(StrictSchema):
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**53))
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=5000))


class ReportQuery(StrictSchema):
    # design: not an enum here: a format the server does not make is 406 (DESIGN §13), not 400.
    format = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=20),
                           metadata={"description": "md, html, pdf or docx (default: by Accept, else md)."})
    partial = fields.Boolean(load_default=False,
                             metadata={"description": "For a task still running: the report so far instead of 409."})


class StreamQuery(StrictSchema):
    last_event_id = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=2**53))


class SourceSearchInput(StrictSchema):
    query = fields.String(required=True, validate=validate.Length(min=1, max=500))
    limit = fields.Integer(load_default=10, validate=validate.Range(min=1, max=50))


class FetchInput(StrictSchema):
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"}, validate=validate.Length(max=2000),
                     metadata={"description": "The page to read (http or https; public addresses only)."})
    max_chars = fields.Integer(load_default=20000, validate=validate.Range(min=100, max=100000),
                               metadata={"description": "Longest text returned; longer pages are cut."})


class WebhookInput(StrictSchema):
    url = fields.Url(required=True, require_tld=False, schemes={"http", "https"}, validate=validate.Length(max=2000))
    events = fields.List(fields.String(validate=validate.OneOf((*EVENT_TYPES, "*"))), load_default=None,
                         allow_none=True, validate=validate.Length(min=1, max=len(EVENT_TYPES) + 1),
                         metadata={"description": "Event types to deliver; default the three terminal ones; "
                                                  "[\"*\"] for all."})
    task_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    secret = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=16, max=200),
                           metadata={"description": "HMAC secret; default WEBHOOK_SECRET, else one is generated "
                                                    "and returned once."})


class WebhookIdInput(StrictSchema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=100))
