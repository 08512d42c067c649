"""A plug-in named in TOOL_MODULES by the tests: registers one tool."""

from __future__ import annotations

from marshmallow import fields

from mcp.schemas import StrictSchema
from mcp.tools import Tool, ToolOutput


class EchoInput(StrictSchema):
    text = fields.String(required=True)


def register_tools(registry, settings):
    registry.register(Tool("plugin_echo", "Echo the text back (a test plug-in).", EchoInput,
                           lambda ctx, args: ToolOutput({"echo": args["text"]}), {"readOnlyHint": True}))
