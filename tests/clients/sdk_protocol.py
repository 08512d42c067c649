"""The official MCP Python SDK as a client author uses it: `mcp.Client(url)` in its default
mode and in each explicit mode, concurrent calls in one session with random cancels, and
the stdio bridge. Run by the SDK's own venv, outside the repository (our `mcp/` package
would shadow the SDK).

    python sdk_protocol.py modes URL MODE            # MODE: default | legacy | auto | 2026-07-28
    python sdk_protocol.py concurrent URL N SEED
    python sdk_protocol.py bridge -- COMMAND ARG...  # ping and cancel through python -m mcp.stdio --url

Prints one JSON line summarising what the client saw; exits non-zero on any error."""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import anyio
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

# One valid call of every tool; {task} is replaced by a task id once one exists.
TOOL_CALLS = {
    "list_orchestrator_patterns": {},
    "orchestrate_search": {"query": "SSE streams behind Caddy", "num_agents": 2},
    "orchestrate_research": {"query": "How are crashed tasks resumed?", "num_agents": 2},
    "list_orchestrations": {},
    "get_orchestration_status": {"task_id": "{task}"},
    "get_orchestration_result": {"task_id": "{task}"},
    "cancel_orchestration": {"task_id": "{task}"},
    "fetch_url": {"url": "http://127.0.0.1:9/nothing-listens-here"},
    **{f"{source}_search": {"query": "gunicorn workers"} for source in
       ("local", "wikipedia", "arxiv", "web", "github", "hackernews", "semantic_scholar")},
}
TERMINAL = ("completed", "failed", "cancelled")
RUN = f"{random.randrange(16**8):08x}"  # tasks are found by their query: each run's queries are its own


async def task_for(client: Client, query: str, timeout: float = 60.0) -> dict:
    """The task a call with this query started, once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await client.call_tool("list_orchestrations", {"limit": 100})
        for task in listed.structured_content["tasks"]:
            if task["query"] == query:
                return task
        await anyio.sleep(0.1)
    raise AssertionError(f"no task for {query!r}")


async def final_status(client: Client, task_id: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await client.call_tool("get_orchestration_status", {"task_id": task_id})).structured_content
        if status["status"] in TERMINAL:
            return status["status"]
        await anyio.sleep(0.2)
    raise AssertionError(f"task {task_id} never ended")


async def cancel_call(client: Client, query: str, delay: float = 0.0) -> tuple[str, bool]:
    """Start a research call, cancel it (the SDK sends notifications/cancelled) once its task
    exists and `delay` more seconds passed; (task id, whether a response arrived anyway)."""
    answered = False
    async with anyio.create_task_group() as group:
        scope = anyio.CancelScope()

        async def call() -> None:
            nonlocal answered
            with scope:
                await client.call_tool("orchestrate_research", {"query": query, "num_agents": 3})
                answered = True

        group.start_soon(call)
        task = await task_for(client, query)
        await anyio.sleep(delay)
        scope.cancel()
    return task["task_id"], answered


async def modes(url: str, mode: str) -> dict:
    kwargs = {} if mode == "default" else {"mode": mode}
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    try:
        async with Client(url, read_timeout_seconds=120, **kwargs) as client:
            seen: dict = {"protocol": client.protocol_version,
                          "server": client.server_info.name if client.server_info else None}
            seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            seen["resources"] = sorted(str(r.uri) for r in (await client.list_resources()).resources)
            templates = (await client.list_resource_templates()).resource_templates
            seen["templates"] = sorted(t.uri_template for t in templates)
            seen["prompts"] = sorted(p.name for p in (await client.list_prompts()).prompts)
            task_id = None
            calls = {}
            # the SDK validates each structuredContent against the tool's outputSchema
            for name, arguments in TOOL_CALLS.items():
                arguments = {k: (task_id if v == "{task}" else v) for k, v in arguments.items()}
                result = await client.call_tool(name, arguments, progress_callback=on_progress
                                                if name.startswith("orchestrate") else None)
                content = result.structured_content or {}
                calls[name] = {"error": result.is_error, "status": content.get("status")}
                if name == "orchestrate_research":
                    task_id = content["task_id"]
            seen["calls"] = calls
            seen["progress"] = len(progress)
            info = await client.read_resource("orchestrator://research/info")
            seen["info_tool"] = json.loads(info.contents[0].text)["tool"]
            prompt = await client.get_prompt("research", {"query": "why sqlite"})
            seen["prompt_mentions_tool"] = "orchestrate_research" in prompt.messages[0].content.text
            cancelled_id, answered = await cancel_call(client, f"a call to cancel in mode {mode}, run {RUN}")
            seen["cancelled_status"] = await final_status(client, cancelled_id)
            seen["cancelled_answered"] = answered
            return seen
    except (MCPError, BaseExceptionGroup) as raised:
        exc = raised
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        if not isinstance(exc, MCPError):
            raise
        return {"mcp_error": exc.error.code, "data": exc.error.data}


async def concurrent(url: str, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    plan = [{"query": f"concurrent call {i} of {n}, seed {seed}, run {RUN}", "cancel": rng.random() < 0.5,
             "delay": rng.choice((0.0, 0.0, 0.2, 0.5))} for i in range(n)]
    async with Client(url, read_timeout_seconds=180) as client:
        task_ids: dict[int, str] = {}

        async def one(i: int) -> None:
            item = plan[i]
            if item["cancel"]:
                task_ids[i], item["answered"] = await cancel_call(client, item["query"], item["delay"])
            else:
                result = await client.call_tool("orchestrate_research",
                                                {"query": item["query"], "num_agents": 3})
                task_ids[i] = result.structured_content["task_id"]
                item["answered"] = True

        async with anyio.create_task_group() as group:
            for i in range(n):
                group.start_soon(one, i)
        for i, item in enumerate(plan):
            item["status"] = await final_status(client, task_ids[i])
        return {"protocol": client.protocol_version, "calls": plan}


async def bridge(command: list[str]) -> dict:
    """A ping answered while a 20-agent call runs, then that call cancelled, all through the bridge."""
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with Client(params, read_timeout_seconds=180) as client:
        seen: dict = {"protocol": client.protocol_version, "answered": False}
        query = f"twenty agents while a ping goes through the bridge, run {RUN}"
        async with anyio.create_task_group() as group:
            scope = anyio.CancelScope()

            async def long_call() -> None:
                with scope:
                    await client.call_tool("orchestrate_research", {"query": query, "num_agents": 20})
                    seen["answered"] = True

            group.start_soon(long_call)
            task = await task_for(client, query)
            started = time.monotonic()
            await client.send_ping()
            seen["ping_seconds"] = round(time.monotonic() - started, 3)
            status = (await client.call_tool("get_orchestration_status", {"task_id": task["task_id"]}))
            seen["status_at_ping"] = status.structured_content["status"]
            scope.cancel()  # the SDK sends notifications/cancelled through the bridge
        seen["cancelled_status"] = await final_status(client, task["task_id"])
        return seen


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("modes", "concurrent", "bridge"))
    parser.add_argument("args", nargs="+")
    args = parser.parse_args()
    if args.what == "modes":
        seen = anyio.run(modes, args.args[0], args.args[1])
    elif args.what == "concurrent":
        seen = anyio.run(concurrent, args.args[0], int(args.args[1]), int(args.args[2]))
    else:
        seen = anyio.run(bridge, args.args)
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
