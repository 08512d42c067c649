"""The service around the orchestrators: MCP protocol, tool registry, task runtime, store,
streaming bridge, HTTP blueprints, security and observability.

Note: this package shadows the PyPI `mcp` SDK inside the app's process (DESIGN §2)."""

__version__ = "1.0.0"
SERVICE_NAME = "mcp-orchestrator"


def __getattr__(name: str):
    # design: the seed review's name for the MCP server class (`from mcp import
    # UnifiedMCPServer`), imported on first use so that importing the package starts nothing.
    if name == "UnifiedMCPServer":
        from .protocol import McpServer

        return McpServer
    raise AttributeError(f"module 'mcp' has no attribute {name!r}")
