"""Every MCP method fuzzed over Streamable HTTP (with and without a session, under each
protocol version, stateless 2026 style too) against a real four-worker service, and over
stdio: hostile params, ids and bodies never earn a 5xx or a JSON-RPC internal error
(-32603), tool errors come back as `isError` results, and the service stays healthy."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp.protocol import PROTOCOL_VERSIONS
from tests.fuzz import strategies as fz
from tests.fuzz.checks import INTERNAL_ERROR, assert_healthy, check_answer, check_tool_result
from tests.fuzz.conftest import KEY, bugs_logged, tally

# the 2026 draft the server does not offer: a client asking for it statelessly still gets a clean answer
STATELESS_VERSION = "2026-07-28"

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/list",
           "resources/templates/list", "resources/read", "prompts/list", "prompts/get", "logging/setLevel",
           "completion/complete", "tasks/get", "tasks/result", "tasks/list", "tasks/cancel"]
NOTIFICATIONS = ["notifications/initialized", "notifications/cancelled"]
SESSIONS = ["none", "unknown", "stateless", *PROTOCOL_VERSIONS]
IDS = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.text(max_size=20), st.sampled_from([None, True, 1.5, [], {}]))


@pytest.fixture(scope="module")
def mcp_world(fuzz_service) -> dict[str, Any]:
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    task = fuzz_service.post("/tools/orchestrate_search", headers=headers,
                             json={"query": "sqlite store", "max_results": 3, "wait": True}).json()
    sessions = {}
    for version in PROTOCOL_VERSIONS:
        reply = fuzz_service.post("/mcp", headers=headers, data=json.dumps({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}}}))
        sessions[version] = reply.headers["Mcp-Session-Id"]
    tools = {t["name"]: t["inputSchema"] for t in fuzz_service.get("/tools", headers=headers).json()["tools"]}
    starts = {"orchestrate_research", "orchestrate_search", "dream_orchestrate_research"}
    return {"task_id": task["task_id"], "sessions": sessions, "tools": tools, "starts": starts}


def task_ids(world: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(world["task_id"]), fz.json_values, st.sampled_from(["research_0000", "", "x" * 500]))


def tool_args(world: dict[str, Any], name: str) -> st.SearchStrategy[Any]:
    if name not in world["tools"]:
        return fz.json_values
    valid = fz.schema_objects(world["tools"][name])
    args = st.one_of(valid, fz.wrong_type_somewhere(valid), fz.json_values).map(fz.tame)
    if name in world["starts"]:  # over MCP an orchestrate call waits 240 s unless told not to
        args = args.map(lambda a: {**a, "wait_seconds": 0} if isinstance(a, dict) else a)
    return args


@st.composite
def params_for(draw: Any, method: str, world: dict[str, Any]) -> Any:
    """Params shaped for `method` (then often broken), or anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(fz.json_values)
    if method == "tools/call":
        name = draw(st.sampled_from(sorted(world["tools"]) + ["dream_orchestrate_research", "no_such_tool", ""]))
        params: dict[str, Any] = {"name": name, "arguments": draw(tool_args(world, name))}
        if draw(st.booleans()):
            params["_meta"] = {"progressToken": draw(st.one_of(st.integers(), st.text(max_size=8), fz.json_values))}
        if draw(st.integers(0, 3)) == 0:
            params["task"] = draw(st.one_of(st.just({"ttl": 60000}), fz.json_values))
        return params
    if method == "resources/read":
        uri = draw(st.sampled_from([
            "orchestrator://research/info", "orchestrator://search/info", f"orchestrator://tasks/{world['task_id']}/status",
            f"orchestrator://tasks/{world['task_id']}/result", "orchestrator://tasks/x/y/z", "file:///etc/passwd",
            "orchestrator://tasks//status"]))
        return {"uri": draw(st.one_of(st.just(uri), fz.json_values))}
    if method == "prompts/get":
        return {"name": draw(st.sampled_from(["research", "search", "nope"])),
                "arguments": draw(st.one_of(st.fixed_dictionaries({"query": fz.texts, "num_agents": fz.json_values}),
                                            fz.json_values))}
    if method in ("tasks/get", "tasks/result", "tasks/cancel"):
        return {"taskId": draw(task_ids(world))}
    if method == "logging/setLevel":
        return {"level": draw(st.one_of(st.sampled_from(["debug", "info", "emergency", "loud"]), fz.json_values))}
    if method == "completion/complete":
        return {"ref": draw(fz.json_values), "argument": draw(st.one_of(
            st.fixed_dictionaries({"name": st.sampled_from(["task_id", "sources", "x"]), "value": fz.texts}),
            fz.json_values))}
    if method == "initialize":
        return {"protocolVersion": draw(st.one_of(st.sampled_from([*PROTOCOL_VERSIONS, "1999-01-01"]), fz.json_values)),
                "capabilities": draw(fz.json_values), "clientInfo": draw(fz.json_values)}
    if method in ("notifications/cancelled",):
        return {"requestId": draw(IDS), "reason": draw(fz.texts)}
    return {"cursor": draw(st.one_of(st.none(), st.sampled_from(["0", "50", "-1", "x", "99999"]), fz.json_values))}


@st.composite
def exchange(draw: Any, method: str, world: dict[str, Any]) -> tuple[dict[str, str], bytes, str]:
    """(headers, body, session kind) for one fuzzed call of `method`."""
    mode = draw(st.sampled_from(SESSIONS))
    headers = {"X-API-Key": KEY, "Content-Type": "application/json",
               "Accept": draw(st.sampled_from(["application/json, text/event-stream", "application/json", "*/*"]))}
    params = draw(params_for(method, world))
    if mode in world["sessions"]:
        headers["Mcp-Session-Id"] = world["sessions"][mode]
        headers["MCP-Protocol-Version"] = mode
    elif mode == "unknown":
        headers["Mcp-Session-Id"] = "fuzz-unknown-session"
    elif mode == "stateless" and isinstance(params, dict):
        params = {**params, "_meta": {**(params.get("_meta") if isinstance(params.get("_meta"), dict) else {}),
                                      "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION}}
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if method not in NOTIFICATIONS or draw(st.integers(0, 4)) == 0:
        message["id"] = draw(st.one_of(st.integers(1, 10 ** 6), IDS))
    if draw(st.integers(0, 5)) == 0:
        message["jsonrpc"] = draw(fz.json_values)
    payload: Any = [message, {"jsonrpc": "2.0", "id": 99, "method": "ping"}] if draw(st.integers(0, 6)) == 0 \
        else message
    body = fz.encode(payload)
    if draw(st.integers(0, 5)) == 0:
        body = draw(fz.mangled(body))
    return headers, body, mode


def check_rpc_messages(messages: list[Any], what: str) -> None:
    for message in messages:
        error = message.get("error")
        assert error is None or error.get("code") != INTERNAL_ERROR, f"{what}: {message}"
        if "result" in message and isinstance(message["result"], dict) and "content" in message["result"]:
            check_tool_result(message["result"], what)


@pytest.mark.parametrize("method", METHODS + NOTIFICATIONS + ["no/such/method"])
def test_mcp_method_never_fails_on_hostile_input(fuzz_service, mcp_world, method):
    log_start = fuzz_service.log_path.stat().st_size

    @given(exchange(method, mcp_world))
    def one(case: tuple[dict[str, str], bytes, str]) -> None:
        headers, body, mode = case
        path = "/mcp" if len(body) % 2 else "/"
        response = fuzz_service.request("POST", path, data=body, headers=headers, stream=True, timeout=120)
        tally(f"mcp {method}")
        tally(f"mcp (any method) session: {mode}")
        what = f"{method} [{mode}] {body[:300]!r}"
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            assert response.status_code == 200, what
            text = response.content.decode()
            check_rpc_messages([json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")], what)
            return
        doc = check_answer(response, what, rpc=True)
        if doc is not None and (isinstance(doc, list) or "jsonrpc" in doc):
            check_rpc_messages(doc if isinstance(doc, list) else [doc], what)

    one()
    assert_healthy(fuzz_service)
    assert bugs_logged(fuzz_service.log_path, log_start) == []


def test_every_mcp_method_is_fuzzed(app):
    server = app.extensions["mcp_orchestrator"].mcp
    assert set(server.handlers) == set(METHODS)
    assert set(server.notification_handlers) == set(NOTIFICATIONS)


class StdioServer:
    """`python -m mcp.stdio` in its own process; each fuzzed line is followed by a ping whose
    answer marks the end of what that line caused."""

    def __init__(self, data_dir: Path):
        env = {**os.environ, "DATA_DIR": str(data_dir), "DOCS_DIR": str(ROOT / "docs"), "LOG_FORMAT": "text",
               "LLM_PROVIDER": "extractive"}
        self.proc = subprocess.Popen([sys.executable, "-m", "mcp.stdio"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.marks = 0

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def exchange(self, line: bytes) -> list[dict[str, Any]]:
        self.marks += 1
        mark = f"mark-{self.marks}"
        self.proc.stdin.write(line.replace(b"\n", b" ") + b"\n" +
                              json.dumps({"jsonrpc": "2.0", "id": mark, "method": "ping"}).encode() + b"\n")
        self.proc.stdin.flush()
        replies = []
        while True:
            reply = json.loads(self.lines.get(timeout=60))
            if reply.get("id") == mark:
                return replies
            replies.append(reply)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def stdio_server(tmp_path_factory):
    server = StdioServer(tmp_path_factory.mktemp("stdio") / "data")
    yield server
    server.stop()


@pytest.mark.parametrize("method", ["initialize", "tools/call", "resources/read", "prompts/get", "tasks/get"])
def test_stdio_never_fails_on_hostile_lines(stdio_server, method):
    world = {"task_id": "research_0000", "tools": {"orchestrate_search": {}, "list_orchestrator_patterns": {},
                                                   "get_orchestration_status": {}},
             "starts": {"orchestrate_search"}, "sessions": {}}

    @given(exchange(method, world))
    def one(case: tuple[dict[str, str], bytes, str]) -> None:
        _, body, _ = case
        replies = stdio_server.exchange(body)
        tally(f"stdio {method}")
        check_rpc_messages(replies, f"stdio {method} {body[:300]!r}")

    one()
    assert stdio_server.proc.poll() is None
