"""The tool registry: every tool the service offers over REST and MCP, with its input
schema (marshmallow, exported as JSON Schema), annotations and handler."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import marshmallow
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import jsonio
from .errors import NotFound, ValidationError


@dataclass
class ToolContext:
    """Who is calling and how: the owner tasks belong to, how to spell public URLs, and
    (over MCP) where progress goes."""

    owner: str
    urls: Callable[[str], dict[str, str]]
    transport: str = "http"
    on_progress: Callable[[dict[str, Any]], None] | None = None
    on_task_started: Callable[[str], None] | None = None


@dataclass
class ToolOutput:
    data: dict[str, Any]
    accepted: bool = False  # started work that is still running (REST answers 202)
    content: list[dict[str, Any]] | None = None  # MCP content items in place of the data as JSON text
    mcp_result: Any = None  # the MCP result encoded once (see encoded_once)

    def call_result(self) -> Any:
        """The MCP CallToolResult: the content items (else the data as JSON text), and the
        data as structuredContent."""
        if self.mcp_result is not None:
            return self.mcp_result
        content = self.content or [{"type": "text", "text": jsonio.dumps(self.data)}]
        return {"content": content, "structuredContent": self.data, "isError": False}

    def encoded_once(self) -> ToolOutput:
        """This output with its MCP result encoded now, for a handler that hands the same
        output to many calls: encoding list_orchestrator_patterns' 17 KB result again on each
        call was a twentieth of the call's CPU (issue 19). Nothing may change it afterwards."""
        return replace(self, mcp_result=jsonio.encoded(self.call_result()))


@dataclass
class Tool:
    name: str
    description: str
    schema: type[marshmallow.Schema]
    handler: Callable[[ToolContext, dict[str, Any]], ToolOutput]
    annotations: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    starts_task: bool = False  # counted against RATE_LIMIT_ORCHESTRATE
    scope: str = "read"  # the OAuth scope a token needs to call it (DESIGN §13)

    @functools.cached_property
    def input_schema(self) -> dict[str, Any]:
        return {**json_schema(self.schema), "additionalProperties": False}

    @functools.cached_property
    def takes_no_arguments(self) -> bool:
        """The schema declares no field and no hook: loading `{}` with it gives `{}`."""
        return not self.schema._declared_fields and not any(self.schema._hooks.values())

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description, "inputSchema": self.input_schema,
               "annotations": self.annotations}
        if self.output_schema:
            out["outputSchema"] = self.output_schema
        return out


_loaders = threading.local()


def loader(schema: type[marshmallow.Schema]) -> marshmallow.Schema:
    """An instance of `schema` for this thread to load with.

    design: building a schema instance deep-copies its declared fields, a tenth of a cheap
    tool call; an instance is reused, but only by its own thread, because loading may keep
    per-load state on it (OrchestrateCommon notes the aliases it resolved)."""
    cache = getattr(_loaders, "schemas", None)
    if cache is None:
        cache = _loaders.schemas = {}
    instance = cache.get(schema)
    if instance is None:
        instance = cache[schema] = schema()
    return instance


@functools.cache
def _converter() -> Any:
    plugin = MarshmallowPlugin()
    APISpec("tools", "1", "3.1.0", plugins=[plugin])
    return plugin.converter


@functools.cache
def json_schema(schema: type[marshmallow.Schema]) -> dict[str, Any]:
    """The JSON Schema of a marshmallow schema class, built once per process (apispec's
    conversion costs more than the rest of a cheap tool call); callers must not mutate it.
    A schema's request aliases (`ALIASES`) are listed beside the fields they stand for."""
    converted = _converter().schema2jsonschema(schema())
    properties = converted.get("properties", {})
    for alias, name in getattr(schema, "ALIASES", {}).items():
        target = {k: v for k, v in properties[name].items() if k != "default"}
        properties[alias] = {**target, "description": f"Alias of {name}."}
    return portable(converted)


def portable(node: Any) -> Any:
    """`node` with every `type` a single name, as clients that map tool schemas onto a
    single-type dialect (Gemini's OpenAPI subset; the MCP Inspector's portability check)
    need, with every bound kept.

    design: apispec writes an optional field that accepts null as `"type": [T, "null"]`
    with `"default": null`. For these tools null only ever means "not given", so the field
    is written as an optional T (no null in its type, enum or default); the server still
    accepts an explicit null. Several non-null types become `anyOf` branches."""
    if isinstance(node, list):
        return [portable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: portable(value) for key, value in node.items()}
    kinds = out.get("type")
    if isinstance(kinds, list):
        named = [kind for kind in kinds if kind != "null"]
        if len(kinds) != len(named):
            if out.get("default", 0) is None:
                del out["default"]
            if isinstance(out.get("enum"), list):
                out["enum"] = [value for value in out["enum"] if value is not None]
        if len(named) == 1:
            out["type"] = named[0]
        else:
            del out["type"]
            out["anyOf"] = [{"type": kind} for kind in named]
    return out


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._aliases: dict[str, str] = {}
        self.plugins: list[dict[str, Any]] = []  # what mcp.plugins loaded or skipped, for /health

    def register(self, tool: Tool) -> None:
        self._tools[tool.name] = tool
        for alias in tool.aliases:
            self._aliases[alias] = tool.name

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name) or self._tools.get(self._aliases.get(name, ""))
        if tool is None:
            raise NotFound(f"unknown tool {name!r}", {"tools": sorted(self._tools)})
        return tool

    def names(self) -> set[str]:
        """Every name a tool answers to, aliases included."""
        return set(self._tools) | set(self._aliases)

    def list(self) -> list[Tool]:
        return list(self._tools.values())

    def call(self, name: str, arguments: Any, ctx: ToolContext) -> ToolOutput:
        tool = self.get(name)
        if not isinstance(arguments, dict):
            raise ValidationError("arguments must be a JSON object", {"fields": {"_schema": ["expected an object"]}})
        if not arguments and tool.takes_no_arguments:
            # design: nothing to validate, and marshmallow's load of {} was a thirtieth of a
            # list_orchestrator_patterns call (issue 19)
            return tool.handler(ctx, {})
        try:
            loaded = loader(tool.schema).load(arguments)
        except marshmallow.ValidationError as exc:
            raise ValidationError.from_marshmallow(exc) from None
        return tool.handler(ctx, loaded)
