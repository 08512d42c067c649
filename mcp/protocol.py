"""The MCP server as a dispatch table (CONVENTIONS 3): `method -> handler`, plain dicts in
and out. Transports (Streamable HTTP, legacy SSE, stdio) call `McpServer.handle_payload`
and know nothing of methods; handlers know nothing of transports."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestration.models import TERMINAL_STATUSES

from . import SERVICE_NAME, __version__, jsonio, metrics
from .builtin_tools import RESEARCH_DESCRIPTION, SEARCH_DESCRIPTION
from .deadletter import DeadLetters
from .errors import ApiError, Conflict, NotFound
from .reports import FORMATS, report_uri
from .schemas import ResearchInput, SearchInput
from .settings import Settings
from .store import Store
from .tasks import TaskService
from .tools import ToolContext, ToolRegistry, json_schema

log = logging.getLogger(__name__)

# design: the 2026-07-28 revision (server/discover, per-request envelope, cacheable
# results, cancellation by closing the stream) is not offered: a client probing for it
# gets -32022 naming these versions and falls back to initialize (the SDK's default mode).
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = PROTOCOL_VERSIONS[-1]
PAGE_SIZE = 50
DEAD_LETTER_URI = "orchestrator://dead-letter"
# How long tasks/cancel waits for a running task to stop before answering.
CANCEL_WAIT_SECONDS = 10.0
RELATED_TASK = "io.modelcontextprotocol/related-task"
REPORT_RESOURCES = 10  # finished tasks whose reports resources/list shows

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603)
UNSUPPORTED_PROTOCOL_VERSION = -32022
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class RequestCancelled(Exception):
    """The client cancelled this request: it gets no response (the specification's SHOULD NOT)."""


class CallLedger:
    """Per request of one session: the task it started and whether the client cancelled it.
    In memory, for a transport with one client in one process (stdio)."""

    def __init__(self) -> None:
        self._calls: dict[str, tuple[str | None, bool]] = {}
        self._lock = threading.Lock()

    def record(self, request_id: str, task_id: str | None = None, cancelled: bool = False) -> tuple[str | None, bool]:
        """Note the task and/or the cancel; (task id, cancelled) after this write."""
        with self._lock:
            old_task, old_cancelled = self._calls.get(request_id, (None, False))
            self._calls[request_id] = (task_id or old_task, cancelled or old_cancelled)
            return self._calls[request_id]

    def get(self, request_id: str) -> tuple[str | None, bool]:
        with self._lock:
            return self._calls.get(request_id, (None, False))


class StoreCallLedger(CallLedger):
    """The same, kept in the store beside the session, so a cancel landing on any worker
    finds the request's task; each record is merged atomically by the store."""

    def __init__(self, store: Store, session_id: str, ttl: float) -> None:
        self.store, self.session_id, self.ttl = store, session_id, ttl

    def record(self, request_id: str, task_id: str | None = None, cancelled: bool = False) -> tuple[str | None, bool]:
        return self.store.record_session_call(self.session_id, request_id, self.ttl, task_id, cancelled)

    def get(self, request_id: str) -> tuple[str | None, bool]:
        return self.store.session_call(self.session_id, request_id)


@dataclass
class CallContext:
    """What a transport knows about the caller of one message."""

    owner: str
    urls: Callable[[str], dict[str, str]]
    session: dict[str, Any] = field(default_factory=dict)
    notify: Callable[[dict[str, Any]], None] | None = None  # sends a JSON-RPC notification now
    save_session: Callable[[], None] = lambda: None
    request_id: Any = None
    calls: CallLedger = field(default_factory=CallLedger)


def rpc_error(msg_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": error}


def parse_payload(raw: bytes | str) -> Any:
    """A JSON-RPC message or batch from a request body or a stdio line, decoded by the one
    set of JSON rules (jsonio.loads) for every transport; RpcError -32700 naming the reason."""
    try:
        return jsonio.loads(raw)
    except jsonio.JsonRejected as exc:
        raise RpcError(PARSE_ERROR, f"parse error: {exc}", {"reason": exc.reason}) from None


def is_request(message: Any) -> bool:
    return isinstance(message, dict) and "method" in message and "id" in message


def negotiate(requested: Any) -> str:
    return requested if requested in PROTOCOL_VERSIONS else LATEST_VERSION


def unsupported_version(requested: Any) -> dict[str, Any]:
    """The error for a protocol version this server does not speak, naming those it does."""
    return rpc_error(None, UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol version: {requested}",
                     {"supported": list(PROTOCOL_VERSIONS), "requested": requested})


def call_key(request_id: Any) -> str:
    """A request id as the ledger keys it: JSON, so the id 1 and the id "1" stay apart."""
    return json.dumps(request_id)


class McpServer:
    def __init__(self, settings: Settings, store: Store, registry: ToolRegistry, tasks: TaskService,
                 dead_letters: DeadLetters | None = None):
        self.dead_letters = dead_letters
        self.settings = settings
        self.store = store
        self.registry = registry
        self.tasks = tasks
        self.handlers: dict[str, Callable[[dict[str, Any], CallContext], Any]] = {
            "initialize": self.initialize,
            "ping": lambda params, ctx: {},
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "resources/list": self.resources_list,
            "resources/templates/list": self.resource_templates,
            "resources/read": self.resources_read,
            "prompts/list": self.prompts_list,
            "prompts/get": self.prompts_get,
            "logging/setLevel": self.set_level,
            "completion/complete": self.complete,
            "tasks/get": self.task_get,
            "tasks/result": self.task_result,
            "tasks/list": self.task_list,
            "tasks/cancel": self.task_cancel,
        }
        self.handlers = {method: metrics.timed_mcp(method, h) for method, h in self.handlers.items()}
        metrics.KNOWN_TOOLS.update(registry.names())
        self.notification_handlers: dict[str, Callable[[dict[str, Any], CallContext], None]] = {
            "notifications/initialized": lambda params, ctx: None,
            "notifications/cancelled": self.on_cancelled,
        }

    # -- dispatch -----------------------------------------------------------------------

    def handle_payload(self, payload: Any, ctx: CallContext) -> Any:
        """One JSON-RPC message or a batch; returns the response(s), or None when there is
        nothing to answer (notifications and responses only)."""
        if isinstance(payload, list):
            if not payload:
                return rpc_error(None, INVALID_REQUEST, "empty batch")
            replies = [r for r in (self.handle(m, ctx) for m in payload) if r is not None]
            return replies or None
        return self.handle(payload, ctx)

    def handle(self, message: Any, ctx: CallContext) -> dict[str, Any] | None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return rpc_error(_safe_id(message), INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        method = message.get("method")
        if method is None:
            if "result" in message or "error" in message:
                return None  # a response to a server request; we send none, so nothing to match
            return rpc_error(_safe_id(message), INVALID_REQUEST, "missing method")
        params = message.get("params", {})
        if not isinstance(method, str) or not isinstance(params, dict):
            return rpc_error(_safe_id(message), INVALID_REQUEST, "method must be a string, params an object")
        if "id" not in message:
            handler = self.notification_handlers.get(method)
            if handler is not None:
                try:
                    handler(params, ctx)
                except Exception:  # noqa: BLE001 - notifications get no reply, errors are only logged
                    log.warning("notification %s failed", method, exc_info=True)
            return None
        msg_id = message["id"]
        if not _valid_id(msg_id):
            return rpc_error(None, INVALID_REQUEST, "id must be a string or an integer")
        handler = self.handlers.get(method)
        if handler is None:
            return rpc_error(msg_id, METHOD_NOT_FOUND, f"method not found: {method}")
        ctx.request_id = msg_id
        try:
            result = handler(params, ctx)
        except RequestCancelled:
            return None
        except RpcError as exc:
            return rpc_error(msg_id, exc.code, exc.message, exc.data)
        except ApiError as exc:
            return rpc_error(msg_id, INVALID_PARAMS if exc.status < 500 else INTERNAL_ERROR, exc.message,
                             {"error": exc.code, **exc.details})
        except Exception:  # noqa: BLE001 - logged with its traceback, answered as -32603
            log.exception("MCP method %s failed", method)
            return rpc_error(msg_id, INTERNAL_ERROR, "internal error")
        return {"jsonrpc": "2.0", "id": msg_id, "result": result}

    # -- lifecycle ------------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        return {
            "tools": {"listChanged": False},
            "resources": {"subscribe": False, "listChanged": False},
            "prompts": {"listChanged": False},
            "logging": {},
            "completions": {},
            "tasks": {"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}},
        }

    def server_info(self) -> dict[str, Any]:
        return {"name": SERVICE_NAME, "title": "MCP Orchestrator", "version": __version__}

    def initialize(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        version = negotiate(params.get("protocolVersion"))
        ctx.session.update({"protocol_version": version, "client_info": params.get("clientInfo") or {},
                            "initialized_at": time.time()})
        return {"protocolVersion": version, "capabilities": self.capabilities(), "serverInfo": self.server_info(),
                "instructions": INSTRUCTIONS}

    def set_level(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise RpcError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
        ctx.session["log_level"] = level
        return {}

    # -- tools ----------------------------------------------------------------------------

    def tools_list(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        tools = [{**t.describe(), "execution": {"taskSupport": "optional" if t.starts_task else "forbidden"}}
                 for t in self.registry.list()]
        return self._page(tools, params, "tools")

    def tools_call(self, params: dict[str, Any], ctx: CallContext) -> Any:
        name = params.get("name")
        if not isinstance(name, str):
            raise RpcError(INVALID_PARAMS, "params.name must be a string")
        try:
            tool = self.registry.get(name)
        except NotFound:
            raise RpcError(INVALID_PARAMS, f"unknown tool: {name}") from None
        arguments = params.get("arguments") or {}
        as_task = "task" in params
        if as_task and not tool.starts_task:
            raise RpcError(METHOD_NOT_FOUND, f"tool {tool.name} does not support task-augmented calls",
                           {"taskSupport": "forbidden"})
        progress_token = _meta(params).get("progressToken")
        tool_ctx = ToolContext(owner=ctx.owner, urls=ctx.urls, transport="mcp")
        request_id = ctx.request_id  # the ledger's key, made only for a call that starts a task

        def remember(task_id: str) -> None:
            # design: recorded in the store so a notifications/cancelled landing on another
            # worker finds the task; a cancel that came first is honoured here.
            _, cancelled = ctx.calls.record(call_key(request_id), task_id=task_id)
            if cancelled:
                self._cancel_quietly(task_id, ctx.owner)

        if as_task:
            # 2025-11-25 task-augmented call: answer with the task handle at once; it is
            # cancelled with tasks/cancel, not with notifications/cancelled.
            arguments = {**arguments, "wait_seconds": 0} if isinstance(arguments, dict) else arguments
        else:
            tool_ctx.on_task_started = remember
            if ctx.notify is not None:
                tool_ctx.on_progress = _event_sender(progress_token, ctx.session.get("log_level"), ctx.notify)
        try:
            output = self.registry.call(tool.name, arguments, tool_ctx)
        except ApiError as exc:
            if as_task:
                raise  # no task was created: a JSON-RPC error, not a CreateTaskResult
            return tool_error(exc.message, {"error": exc.code, **exc.details})
        if as_task:
            return {"task": mcp_task(self.tasks.get(output.data["task_id"], ctx.owner))}
        if tool.starts_task and ctx.calls.get(call_key(request_id))[1]:
            raise RequestCancelled
        return output.call_result()

    def on_cancelled(self, params: dict[str, Any], ctx: CallContext) -> None:
        """A client gave up on a request: cancel the task that request started, if any, or
        note the cancel so that the task is cancelled as soon as the request starts it."""
        request_id = params.get("requestId")
        if not _valid_id(request_id):
            return
        task_id, _ = ctx.calls.record(call_key(request_id), cancelled=True)
        if task_id:
            self._cancel_quietly(task_id, ctx.owner)

    def _cancel_quietly(self, task_id: str, owner: str) -> None:
        try:
            self.tasks.cancel(task_id, owner)
        except (Conflict, NotFound):
            pass  # already ended, or not this caller's: nothing left to cancel

    # -- resources ------------------------------------------------------------------------

    def resources_list(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        resources = [
            {"uri": "orchestrator://research/info", "name": "research", "title": "Research orchestrator",
             "description": RESEARCH_DESCRIPTION, "mimeType": "application/json"},
            {"uri": "orchestrator://search/info", "name": "search", "title": "Search orchestrator",
             "description": SEARCH_DESCRIPTION, "mimeType": "application/json"},
        ]
        if self.dead_letters is not None:
            resources.append({"uri": DEAD_LETTER_URI, "name": "dead-letter", "title": "Dead letters",
                              "description": "Your tasks that failed for good and webhook deliveries that ran out "
                                             "of retries (newest 50); retry or dismiss them over REST.",
                              "mimeType": "application/json"})
        # design: only the caller's most recent finished tasks are listed (REPORT_RESOURCES of
        # them, each in every format), so the list stays small however many tasks a key has;
        # any other task's report is read by its URI (see the templates).
        tasks, _ = self.tasks.list(ctx.owner, None, None, REPORT_RESOURCES * 3, None)
        finished = [t for t in tasks if t.status in TERMINAL_STATUSES][:REPORT_RESOURCES]
        for task in finished:
            for fmt in FORMATS.values():
                resources.append({
                    "uri": report_uri(task.task_id, fmt.name), "name": f"{task.task_id}.{fmt.name}",
                    "title": f"{task.title or task.query} ({fmt.name})"[:200],
                    "description": f"Report of the {task.orchestrator} task {task.task_id} ({task.status}).",
                    "mimeType": fmt.media_type})
        return self._page(resources, params, "resources")

    def resource_templates(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return self._page([
            {"uriTemplate": "orchestrator://tasks/{task_id}/status", "name": "task-status",
             "description": "Status and progress of a task.", "mimeType": "application/json"},
            {"uriTemplate": "orchestrator://tasks/{task_id}/result", "name": "task-result",
             "description": "The result document of a finished task.", "mimeType": "application/json"},
            *({"uriTemplate": f"orchestrator://tasks/{{task_id}}/report.{fmt.name}", "name": f"task-report-{fmt.name}",
               "description": f"The report of a finished task as {fmt.name} "
                              f"({'base64 blob' if fmt.binary else 'text'}).",
               "mimeType": fmt.media_type} for fmt in FORMATS.values()),
        ], params, "resourceTemplates")

    def resources_read(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        uri = params.get("uri")
        if not isinstance(uri, str):
            raise RpcError(INVALID_PARAMS, "params.uri must be a string")
        if uri in ("orchestrator://research/info", "orchestrator://search/info"):
            kind = uri.split("/")[2]
            schema = ResearchInput if kind == "research" else SearchInput
            data: Any = {"name": kind, "tool": f"orchestrate_{kind}",
                         "description": RESEARCH_DESCRIPTION if kind == "research" else SEARCH_DESCRIPTION,
                         "parameters": json_schema(schema)}
        elif uri == DEAD_LETTER_URI and self.dead_letters is not None:
            entries, cursor = self.dead_letters.list(ctx.owner, False, None, 50, None)
            data = {"entries": entries, "next_cursor": cursor}
        elif uri.startswith("orchestrator://tasks/") and uri.count("/") == 4:
            _, _, _, task_id, what = uri.split("/")
            try:
                task = self.tasks.get(task_id, ctx.owner)
                if what.startswith("report.") and what[len("report."):] in FORMATS:
                    doc = self.tasks.reports.document(task, FORMATS[what[len("report."):]])
                    return {"contents": [doc.mcp_contents(uri)]}
                if what == "status":
                    data = self.tasks.status(task, ctx.urls(task_id))
                elif what == "result":
                    data = self.tasks.result(task_id, ctx.owner)
                else:
                    raise RpcError(-32002, f"resource not found: {uri}", {"uri": uri})
            except NotFound:
                raise RpcError(-32002, f"resource not found: {uri}", {"uri": uri}) from None
        else:
            raise RpcError(-32002, f"resource not found: {uri}", {"uri": uri})
        return {"contents": [{"uri": uri, "mimeType": "application/json", "text": jsonio.dumps(data)}]}

    # -- prompts --------------------------------------------------------------------------

    def prompts_list(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return self._page([
            {"name": "research", "title": "Research a question",
             "description": "Ask the research orchestrator for a cited report.",
             "arguments": [{"name": "query", "description": "The question", "required": True},
                           {"name": "num_agents", "description": "Worker agents (1-20)", "required": False}]},
            {"name": "search", "title": "Multi-agent search",
             "description": "Search several sources at once and summarise.",
             "arguments": [{"name": "query", "description": "What to search for", "required": True}]},
        ], params, "prompts")

    def prompts_get(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        name, args = params.get("name"), params.get("arguments") or {}
        if name not in PROMPTS or not isinstance(args, dict):
            raise RpcError(INVALID_PARAMS, f"unknown prompt: {name}")
        query = str(args.get("query", "")).strip()
        if not query:
            raise RpcError(INVALID_PARAMS, "argument 'query' is required")
        if name == "research":
            agents = str(args.get("num_agents") or 8)
            text = (f"Use the orchestrate_research tool with query={json.dumps(query)} and num_agents={agents}. "
                    "Then answer from its final_synthesis, keeping the [S<n>] citations and listing the sources.")
        else:
            text = (f"Use the orchestrate_search tool with query={json.dumps(query)}. "
                    "Then summarise the fused results, citing them as [S<n>].")
        return {"description": f"{name} prompt", "messages": [{"role": "user", "content": {"type": "text",
                                                                                          "text": text}}]}

    def complete(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        ref, argument = params.get("ref"), params.get("argument")
        if not isinstance(argument, dict) or not isinstance(argument.get("name"), str):
            raise RpcError(INVALID_PARAMS, "params.argument must be an object with a string name")
        if not isinstance(ref, dict):
            raise RpcError(INVALID_PARAMS, "params.ref must be an object")
        if ref.get("type") == "ref/prompt":
            if ref.get("name") not in PROMPTS:
                raise RpcError(INVALID_PARAMS, f"unknown prompt: {ref.get('name')}", {"ref": ref})
        elif ref.get("type") == "ref/resource":
            if ref.get("uri") not in RESOURCE_TEMPLATES:
                raise RpcError(INVALID_PARAMS, f"unknown resource template: {ref.get('uri')}", {"ref": ref})
        else:
            raise RpcError(INVALID_PARAMS, "params.ref.type must be ref/prompt or ref/resource", {"ref": ref})
        name, prefix = argument["name"], str(argument.get("value", ""))
        values: list[str] = []
        if name == "task_id":
            tasks, _ = self.tasks.list(ctx.owner, None, None, 100, None)
            values = [t.task_id for t in tasks if t.task_id.startswith(prefix)]
        elif name in ("source", "sources"):
            values = [s for s in self.tasks.catalog.sources if s.startswith(prefix)]
        return {"completion": {"values": values[:100], "total": len(values), "hasMore": len(values) > 100}}

    # -- tasks (2025-11-25) ---------------------------------------------------------------

    def _task_id(self, params: dict[str, Any]) -> str:
        task_id = params.get("taskId")
        if not isinstance(task_id, str):
            raise RpcError(INVALID_PARAMS, "params.taskId must be a string")
        return task_id

    def task_get(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return mcp_task(self.tasks.get(self._task_id(params), ctx.owner))

    def task_result(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        task_id = self._task_id(params)
        task = self.tasks.wait(task_id, ctx.owner, self.settings.timeout)
        if ctx.calls.get(call_key(ctx.request_id))[1]:
            raise RequestCancelled
        if task.status not in TERMINAL_STATUSES:
            raise RpcError(INTERNAL_ERROR, f"task {task_id} is still {task.status}")
        data = self.tasks.result(task_id, ctx.owner)
        return {"content": [{"type": "text", "text": jsonio.dumps(data)}],
                "structuredContent": data, "isError": task.status == "failed",
                "_meta": {RELATED_TASK: {"taskId": task_id}}}

    def task_list(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        cursor = params.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise RpcError(INVALID_PARAMS, "invalid cursor")
        tasks, next_cursor = self.tasks.list(ctx.owner, None, None, PAGE_SIZE, cursor)
        out: dict[str, Any] = {"tasks": [mcp_task(t) for t in tasks]}
        if next_cursor:
            out["nextCursor"] = next_cursor
        return out

    def task_cancel(self, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Cancel and answer once the task has stopped (or CANCEL_WAIT_SECONDS passed: its
        cancel is recorded and cannot be undone, so it is `cancelled` either way)."""
        task_id = self._task_id(params)
        try:
            self.tasks.cancel(task_id, ctx.owner)
        except Conflict as exc:
            raise RpcError(INVALID_PARAMS, f"cannot cancel task {task_id}: it is already {exc.details['status']}",
                           {"taskId": task_id, "status": MCP_TASK_STATUS[exc.details["status"]]}) from None
        return mcp_task(self.tasks.wait(task_id, ctx.owner, CANCEL_WAIT_SECONDS))

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def _page(items: list[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
        cursor = params.get("cursor")
        try:
            start = int(cursor) if cursor is not None else 0
        except (TypeError, ValueError):
            raise RpcError(INVALID_PARAMS, "invalid cursor") from None
        if start < 0 or start > len(items):
            raise RpcError(INVALID_PARAMS, "invalid cursor")
        out: dict[str, Any] = {key: items[start:start + PAGE_SIZE]}
        if start + PAGE_SIZE < len(items):
            out["nextCursor"] = str(start + PAGE_SIZE)
        return out


PROMPTS = ("research", "search")
RESOURCE_TEMPLATES = ("orchestrator://tasks/{task_id}/status", "orchestrator://tasks/{task_id}/result")
INSTRUCTIONS = (
    "Use orchestrate_research for a cited, multi-agent research report and orchestrate_search for fused "
    "multi-source search results. Long runs return a task_id: poll get_orchestration_result with it."
)
MCP_TASK_STATUS = {"pending": "working", "running": "working", "completed": "completed", "failed": "failed",
                   "cancelled": "cancelled"}


def mcp_task(task: Any) -> dict[str, Any]:
    """A task record in the 2025-11-25 MCP tasks shape. A task whose cancel was accepted is
    `cancelled` from then on (the specification: before tasks/cancel answers), while its
    agents wind down."""
    stopping = task.cancel_requested and task.status not in TERMINAL_STATUSES
    return {
        "taskId": task.task_id,
        "status": "cancelled" if stopping else MCP_TASK_STATUS[task.status],
        "statusMessage": f"{task.orchestrator} {'cancelling' if stopping else task.status} ({task.progress:.0f}%)",
        "createdAt": _iso(task.created_at),
        "lastUpdatedAt": _iso(task.completed_at or task.started_at or task.created_at),
        "ttl": None,
        "pollInterval": 1000,
    }


def tool_error(message: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "structuredContent": {"error": message, **details},
            "isError": True}


def event_level(event_type: str) -> str:
    """The MCP log level of a task event."""
    if "failed" in event_type or "error" in event_type:
        return "error"
    if "cancelled" in event_type or "retry" in event_type:
        return "warning"
    if event_type in ("agent_step", "heartbeat", "checkpoint"):
        return "debug"
    return "info"


def _event_sender(token: Any, log_level: str | None,
                  notify: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None] | None:
    """What a call does with each task event: a progress notification when the request
    carried a progressToken, a notifications/message at or above the level the client set
    with logging/setLevel."""
    if token is None and log_level not in LOG_LEVELS:
        return None
    best = {"progress": -1.0}
    floor = LOG_LEVELS.index(log_level) if log_level in LOG_LEVELS else None

    def send(event: dict[str, Any]) -> None:
        message = event["event_type"] + (f" {event['agent_id']}" if event.get("agent_id") else "")
        if token is not None:
            progress = float(event.get("progress") if event.get("progress") is not None else best["progress"])
            progress = max(progress, best["progress"] + 0.001) if progress <= best["progress"] else progress
            best["progress"] = progress
            notify({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": round(progress, 3), "total": 100,
                               "message": message}})
        level = event_level(event["event_type"])
        if floor is not None and LOG_LEVELS.index(level) >= floor:
            notify({"jsonrpc": "2.0", "method": "notifications/message",
                    "params": {"level": level, "logger": event.get("task_id", "task"), "data": event}})

    return send


def _meta(params: dict[str, Any]) -> dict[str, Any]:
    meta = params.get("_meta")
    return meta if isinstance(meta, dict) else {}


def _valid_id(msg_id: Any) -> bool:
    if isinstance(msg_id, bool):
        return False
    return isinstance(msg_id, str) or (isinstance(msg_id, int) and abs(msg_id) < 2**63)


def _safe_id(message: Any) -> Any:
    msg_id = message.get("id") if isinstance(message, dict) else None
    return msg_id if _valid_id(msg_id) else None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def new_session_id() -> str:
    return secrets.token_urlsafe(24)
