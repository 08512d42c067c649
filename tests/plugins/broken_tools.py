"""A plug-in that fails while registering, after adding one tool: none of it may stay."""

from __future__ import annotations

from tests.plugins.echo_tools import EchoInput

from mcp.tools import Tool, ToolOutput


def register_tools(registry, settings):
    registry.register(Tool("half_registered", "never listed", EchoInput, lambda ctx, args: ToolOutput({})))
    raise RuntimeError("this plug-in is broken on purpose")
