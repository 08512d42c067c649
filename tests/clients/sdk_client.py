"""Drive the server with the official MCP Python SDK client (run by the SDK's own venv,
outside the repository: our `mcp/` package would shadow the SDK).

    python sdk_client.py http URL [--api-key K]
    python sdk_client.py sse URL [--api-key K]
    python sdk_client.py stdio -- COMMAND ARG...

Prints one JSON line summarising what the session saw; exits non-zero on any error."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from contextlib import asynccontextmanager

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import BlobResourceContents, TextResourceContents
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


@asynccontextmanager
async def connect(args: argparse.Namespace):
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    if args.transport == "http":
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as client:
            async with streamable_http_client(args.target[0], http_client=client) as streams:
                yield streams[0], streams[1]
    elif args.transport == "sse":
        async with sse_client(args.target[0], headers=headers) as streams:
            yield streams[0], streams[1]
    else:
        command, *rest = args.target
        params = StdioServerParameters(command=command, args=rest, cwd=args.cwd, env=None)
        async with stdio_client(params) as streams:
            yield streams[0], streams[1]


async def exercise(args: argparse.Namespace) -> dict:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with connect(args) as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        tools = await session.list_tools()
        patterns = await session.call_tool("list_orchestrator_patterns", {})
        search = await session.call_tool("orchestrate_search", {"query": "SSE streams behind Caddy",
                                                                "num_agents": 2}, progress_callback=on_progress)
        research = await session.call_tool("orchestrate_research", {"query": "How are crashed tasks resumed?",
                                                                    "num_agents": 2}, progress_callback=on_progress)
        resources = await session.list_resources()
        info = await session.read_resource("orchestrator://research/info")
        research_id = (research.structured_content or {}).get("task_id")
        report_pdf = await session.read_resource(f"orchestrator://tasks/{research_id}/report.pdf")
        report_md = await session.read_resource(f"orchestrator://tasks/{research_id}/report.md")
        result_docx = await session.call_tool("get_orchestration_result", {"task_id": research_id, "format": "docx"})
        prompt = await session.get_prompt("research", {"query": "why sqlite"})
        await session.send_ping()
    return {
        "protocol": init.protocol_version,
        "server": init.server_info.name,
        "tools": sorted(t.name for t in tools.tools),
        "patterns_error": patterns.is_error,
        "search_status": (search.structured_content or {}).get("status"),
        "research_status": (research.structured_content or {}).get("status"),
        "research_cites": "[S" in (research.structured_content or {}).get("final_synthesis", ""),
        "progress_notifications": len(progress),
        "resources": sorted(str(r.uri) for r in resources.resources),
        "info_tool": json.loads(info.contents[0].text)["tool"],
        "report_pdf": _contents(report_pdf.contents[0]),
        "report_md": _contents(report_md.contents[0]),
        "result_docx": _contents(result_docx.content[0].resource) if result_docx.content[0].type == "resource"
        else result_docx.content[0].type,
        "prompt_mentions_tool": "orchestrate_research" in prompt.messages[0].content.text,
    }


def _contents(contents) -> dict:
    """What a client got for a resource: its kind (text or blob), type and first bytes."""
    if isinstance(contents, BlobResourceContents):
        head = base64.b64decode(contents.blob)[:5].decode("latin-1")
        return {"kind": "blob", "mime": contents.mime_type, "head": head}
    if isinstance(contents, TextResourceContents):
        return {"kind": "text", "mime": contents.mime_type, "head": contents.text[:2]}
    return {"kind": type(contents).__name__}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=("http", "sse", "stdio"))
    parser.add_argument("target", nargs="+")
    parser.add_argument("--api-key")
    parser.add_argument("--cwd")
    args = parser.parse_args()
    print(json.dumps(anyio.run(exercise, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
