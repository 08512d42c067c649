"""The service around the orchestrators: MCP protocol, tool registry, task runtime, store,
streaming bridge, HTTP blueprints, security and observability.

Note: this package shadows the PyPI `mcp` SDK inside the app's process (DESIGN §2)."""

__version__ = "1.0.0"
SERVICE_NAME = "mcp-orchestrator"
