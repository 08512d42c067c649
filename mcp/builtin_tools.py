"""The service's own tools (DESIGN §5): orchestrations, task tools, one search tool per
source. Handlers take validated arguments and return plain data."""

from __future__ import annotations

import time
from typing import Any

from orchestration.errors import SourceError
from orchestration.fetch import FetchFailed, FetchRefused, PageFetcher
from orchestration.models import LEGACY_AGENT_TYPES, TERMINAL_STATUSES, to_dict
from orchestration.search import AGENT_TYPE_SOURCES

from .bridge import run_sync
from .catalog import Catalog
from .errors import SourceFailed, Unavailable, UpstreamError, ValidationError
from .plugins import load_plugins
from .reports import FORMATS, report_uri
from .schemas import (
    EmptyInput,
    FetchInput,
    ListTasksInput,
    ResearchInput,
    ResultInput,
    SearchInput,
    SourceSearchInput,
    StatusInput,
    TaskIdInput,
)
from .tasks import TaskService
from .tools import Tool, ToolContext, ToolOutput, ToolRegistry, json_schema

TASK_OUTPUT = {
    "type": "object",
    "properties": {"task_id": {"type": "string"}, "status": {"type": "string"}},
    "required": ["task_id", "status"],
}
READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}
STARTS_WORK = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": True}

RESEARCH_DESCRIPTION = (
    "Research a question in depth: a planner splits it into num_agents subtasks, worker agents research "
    "them in parallel against the search sources, each in up to max_steps steps (search, read, note, "
    "finish); after each round a reviewer names what is still unanswered and follow-up agents research "
    "it, for up to depth rounds and max_agents_total agents; synthesizers merge the findings and a final "
    "synthesizer writes a Markdown report citing sources as [S1], [S2] ... Over MCP the call waits up "
    "to wait_seconds sending progress, then returns the task id to poll with get_orchestration_result."
)
SEARCH_DESCRIPTION = (
    "Search with several typed agents (web, academic, news, technical, encyclopedia, social, local, "
    "general) in parallel; results are fused by reciprocal rank, de-duplicated by URL with the agents "
    "that found each one, and summarised with [S<n>] citations. depth 2 adds a query-expansion pass."
)


def register_builtin_tools(registry: ToolRegistry, service: TaskService, catalog: Catalog) -> None:
    def orchestrate(kind: str):
        def handler(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
            task = service.start(kind, args, ctx.owner)
            if ctx.on_task_started:
                ctx.on_task_started(task.task_id)
            handle = {"task_id": task.task_id, "status": task.status, **ctx.urls(task.task_id)}
            wait = args["wait"] if ctx.transport == "http" else True
            if not wait or args["wait_seconds"] <= 0:
                return ToolOutput(handle, accepted=True)
            task = service.follow(task.task_id, ctx.owner, args["wait_seconds"], ctx.on_progress)
            if task.status in TERMINAL_STATUSES:
                return ToolOutput(service.result(task.task_id, ctx.owner))
            return ToolOutput({**handle, "status": task.status, "progress": task.progress,
                               "message": "still running: poll get_orchestration_result with this task_id"},
                              accepted=True)

        return handler

    def status(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        task = service.get(args["task_id"], ctx.owner)
        doc = service.status(task, ctx.urls(task.task_id))
        if args.get("include_events"):
            doc["events"] = [e.to_dict() for e in service.events(task.task_id, ctx.owner, 0, 1000)]
        return ToolOutput(doc)

    def result(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        if not args.get("format"):
            return ToolOutput(service.result(args["task_id"], ctx.owner))
        task = service.get(args["task_id"], ctx.owner)
        doc = service.reports.document(task, FORMATS[args["format"]], args["partial"])
        uri = report_uri(task.task_id, doc.format.name)
        data = {"task_id": task.task_id, "status": task.status, "format": doc.format.name,
                "mime_type": doc.format.media_type, "filename": doc.filename, "etag": doc.etag,
                "bytes": len(doc.body), "uri": uri,
                "report_url": f"{ctx.urls(task.task_id)['report_url']}?format={doc.format.name}"}
        if ctx.transport == "mcp":
            # design: the document travels once, as an embedded resource; structuredContent
            # describes it.
            return ToolOutput(data, content=[{"type": "resource", "resource": doc.mcp_contents(uri)}])
        contents = doc.mcp_contents(uri)
        return ToolOutput({**data, **{k: contents[k] for k in ("text", "blob") if k in contents}})

    def cancel(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        task = service.cancel(args["task_id"], ctx.owner)
        return ToolOutput(service.status(task, ctx.urls(task.task_id)))

    def list_tasks(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        tasks, cursor = service.list(ctx.owner, args["status"], args["orchestrator"], args["limit"], args["cursor"])
        return ToolOutput({"tasks": [service.status(t, ctx.urls(t.task_id)) for t in tasks], "next_cursor": cursor})

    patterns_made: list[tuple[float, ToolOutput]] = []

    def patterns(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        # design: the catalog is fixed for the process's life but for whether DOCS_DIR exists,
        # so the document and its MCP result, encoded, are made at most once a second, not on
        # every call (issue 19: building and encoding them was a fifth of a
        # list_orchestrator_patterns call). The cached data is shared: nothing downstream may
        # change it.
        now = time.monotonic()
        if patterns_made and now - patterns_made[0][0] < 1.0:
            return patterns_made[0][1]
        data = {
            "patterns": [
                {"name": "research", "tool": "orchestrate_research", "aliases": ["beltalowda", "cascade"],
                 "description": RESEARCH_DESCRIPTION, "parameters": json_schema(ResearchInput)},
                {"name": "search", "tool": "orchestrate_search", "aliases": ["swarm"],
                 "description": SEARCH_DESCRIPTION, "parameters": json_schema(SearchInput),
                 "agent_types": {t: list(s) for t, s in AGENT_TYPE_SOURCES.items()},
                 "legacy_agent_types": dict(LEGACY_AGENT_TYPES)},
            ],
            "providers": {"default": catalog.resolve_provider(None), "available": catalog.provider_names()},
            "sources": [s.describe() for s in catalog.sources.values()],
        }
        output = ToolOutput(data).encoded_once()
        patterns_made[:] = [(now, output)]
        return output

    tools = [
        Tool("orchestrate_research", RESEARCH_DESCRIPTION, ResearchInput, orchestrate("research"), STARTS_WORK,
             TASK_OUTPUT, ("dream_orchestrate_research", "dreamwalker_orchestrate_cascade", "beltalowda_research"),
             starts_task=True, scope="orchestrate"),
        Tool("orchestrate_search", SEARCH_DESCRIPTION, SearchInput, orchestrate("search"), STARTS_WORK,
             TASK_OUTPUT, ("dream_orchestrate_search", "dreamwalker_orchestrate_swarm", "swarm_search"),
             starts_task=True, scope="orchestrate"),
        Tool("get_orchestration_status", "Status and progress of an orchestration task.", StatusInput, status,
             READ_ONLY, TASK_OUTPUT, ("dreamwalker_status", "dream_orchestration_status")),
        Tool("get_orchestration_result", "The result document of a finished orchestration task "
             "(an error while it still runs); with `format` (md, html, pdf, docx), its report as a document.",
             ResultInput, result, READ_ONLY, TASK_OUTPUT,
             ("dreamwalker_result",)),
        Tool("cancel_orchestration", "Cancel a running orchestration; it ends `cancelled` with whatever "
             "partial report exists.", TaskIdInput, cancel,
             {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True, "openWorldHint": False},
             TASK_OUTPUT, ("dreamwalker_cancel",), scope="orchestrate"),
        Tool("list_orchestrations", "List your orchestration tasks, newest first.", ListTasksInput, list_tasks,
             READ_ONLY, {"type": "object", "properties": {"tasks": {"type": "array"}}, "required": ["tasks"]},
             ("dreamwalker_list",)),
        Tool("list_orchestrator_patterns", "The orchestrators, their parameters, providers and sources.",
             EmptyInput, patterns, READ_ONLY,
             {"type": "object", "properties": {"patterns": {"type": "array"}}, "required": ["patterns"]},
             ("dreamwalker_patterns",)),
    ]
    # design: source searches and page reads run on the worker loop, where the shared
    # per-loop HTTP client lives, rather than on a throwaway loop per request.
    run = service.runtime.loop.call
    for name, source in catalog.sources.items():
        tools.append(source_tool(name, source, run))
    tools.append(fetch_tool(catalog.fetcher(), run))
    for tool in tools:
        registry.register(tool)
    registry.plugins = load_plugins(registry, catalog.settings)


def source_tool(name: str, source: Any, run: Any = None) -> Tool:
    def handler(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        if not source.enabled:
            raise Unavailable(f"source {name} is disabled: {source.disabled_reason}")
        try:
            if run is None:
                hits = run_sync(source.query, args["query"], args["limit"])
            else:
                hits = run(source.query(args["query"], args["limit"]))
        except SourceError as exc:
            raise SourceFailed(str(exc), {"source": name}) from None
        except (LookupError, AttributeError, TypeError, ValueError) as exc:
            # design: a search API answering JSON of another shape than documented fails the
            # source's parsing; that is the API's failure, answered as such, not a 500.
            raise SourceFailed(f"{name}: the API answered in an unexpected shape ({type(exc).__name__})",
                                {"source": name}) from None
        return ToolOutput({"source": name, "query": args["query"],
                           "results": [{k: v for k, v in to_dict(h).items() if k != "text"} for h in hits]})

    return Tool(f"{name}_search", f"Search the `{name}` source directly: {source.description}", SourceSearchInput,
                handler, {**READ_ONLY, "openWorldHint": name != "local"},
                {"type": "object", "properties": {"results": {"type": "array"}}, "required": ["results"]})


FETCH_DESCRIPTION = (
    "Read one web page: fetch it (public addresses only, text-like content, size and time capped) and return "
    "its main text, extracted from the HTML, with the final URL after redirects."
)


def fetch_tool(fetcher: PageFetcher, run: Any) -> Tool:
    def handler(ctx: ToolContext, args: dict[str, Any]) -> ToolOutput:
        try:
            page = run(fetcher.fetch(args["url"]))
        except FetchRefused as exc:
            raise ValidationError(f"fetch refused: {exc}", {"fields": {"url": [str(exc)]}}) from None
        except FetchFailed as exc:
            raise UpstreamError(f"fetch failed: {exc}", {"url": args["url"]}) from None
        data = fetcher.to_dict(page)
        if len(data["text"]) > args["max_chars"]:
            data.update(text=data["text"][:args["max_chars"]], chars=args["max_chars"], truncated=True)
        return ToolOutput(data)

    return Tool("fetch_url", FETCH_DESCRIPTION, FetchInput, handler, {**READ_ONLY, "openWorldHint": True},
                {"type": "object", "properties": {"url": {"type": "string"}, "title": {"type": "string"},
                                                  "text": {"type": "string"}, "truncated": {"type": "boolean"}},
                 "required": ["url", "text"]})
