"""The peer for the MCP throughput benchmark: a FastMCP server (the `fastmcp` package, run
from its own venv by bench/run.sh) exposing `list_orchestrator_patterns`, returning the
same document our service returns (read from PEER_PATTERNS_FILE).

Served by uvicorn with several workers in FastMCP's stateless JSON mode, the configuration
in which it scales best across processes."""

from __future__ import annotations

import json
import os
from typing import Any

from fastmcp import FastMCP

PATTERNS: dict[str, Any] = json.loads(open(os.environ["PEER_PATTERNS_FILE"], encoding="utf-8").read())

server = FastMCP("bench-peer")


@server.tool
def list_orchestrator_patterns() -> dict[str, Any]:
    """The orchestrators, their parameters, providers and sources."""
    return PATTERNS


app = server.http_app(path="/mcp", json_response=True, stateless_http=True)
