"""Every route of the OpenAPI document (and the webhook routes beside it), fuzzed against a
real four-worker service: hostile bodies, path and query values, content types and headers.
No answer may be a 5xx, a JSON-RPC internal error, an error outside the envelope or a body
a strict parser refuses; the service stays healthy and logs no escaped exception."""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp.openapi import build_spec
from tests.fuzz import strategies as fz
from tests.fuzz.checks import assert_healthy, check_answer
from tests.fuzz.conftest import KEY, bugs_logged, tally

pytestmark = pytest.mark.slow

# Routes the app serves that the OpenAPI document does not describe (yet): fuzzed all the same.
UNDOCUMENTED = [("post", "/webhooks"), ("get", "/webhooks"), ("delete", "/webhooks/{webhook_id}"),
                ("get", "/webhooks/{webhook_id}/deliveries"), ("post", "/webhook/register"),
                ("post", "/webhook/unregister")]
ROUTES = [(m, p) for p, ops in build_spec()["paths"].items() for m in ops] + UNDOCUMENTED
TOOL_ROUTES = {"/tools/orchestrate_research": "orchestrate_research", "/tools/orchestrate_search": "orchestrate_search",
               "/tools/get_orchestration_status": "get_orchestration_status",
               "/tools/cancel_orchestration": "cancel_orchestration",
               "/tools/list_orchestrator_patterns": "list_orchestrator_patterns"}
WEBHOOK_SCHEMA = {"type": "object", "properties": {
    "url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}},
    "task_id": {"type": "string"}, "secret": {"type": "string"}}, "required": ["url"]}
HOSTILE_IDS = ["research_0000", "", " ", "..", "%2e%2e", "%ED%A0%80", "%FF", "%00", "a" * 300, "search_" + "f" * 32,
               "<script>", "wh_", "💥"]
QUERY_VALUES = ["", "-1", "0", "1", "99999999999999999999", "NaN", "Infinity", "1e400", "running", "research",
                "%ED%A0%80", "%FF", "a" * 2000, "[]", "{}", "true"]


@pytest.fixture(scope="module")
def world(fuzz_service) -> dict[str, Any]:
    """What the fuzz can point at: a finished task, a webhook, a legacy session, tool schemas."""
    headers = {"X-API-Key": KEY}
    task = fuzz_service.post("/tools/orchestrate_search", headers=headers,
                             json={"query": "sqlite store", "max_results": 3, "wait": True}).json()
    # design: a public address (no DNS needed) that is never contacted: the hook follows only
    # this finished task, which has no events left to send.
    hook = fuzz_service.post("/webhooks", headers=headers,
                             json={"url": "https://93.184.215.14/hook", "task_id": task["task_id"]}).json()
    tools = {t["name"]: t["inputSchema"] for t in fuzz_service.get("/tools", headers=headers).json()["tools"]}
    stream = fuzz_service.get("/sse", headers={**headers, "Accept": "text/event-stream"}, stream=True, timeout=60)
    lines = stream.iter_lines(chunk_size=1, decode_unicode=True)
    endpoint = next(line for line in lines if line.startswith("data:"))
    session = re.search(r"session_id=([\w-]+)", endpoint).group(1)

    def drain() -> None:  # the legacy client keeps reading its stream, as a real one does
        try:
            for _ in stream.iter_content(4096):
                pass
        except Exception:  # noqa: BLE001 - closed at teardown
            pass

    threading.Thread(target=drain, daemon=True).start()
    yield {"task_id": task["task_id"], "webhook_id": hook["id"], "session": session, "tools": tools}
    stream.close()


def schema_objects(world: dict[str, Any], path: str) -> st.SearchStrategy[Any] | None:
    schema = None
    tool = TOOL_ROUTES.get(path) or (path.removeprefix("/tools/") if path.startswith("/tools/") else None)
    if tool in world["tools"]:
        schema = world["tools"][tool]
    elif path in ("/webhooks", "/webhook/register"):
        schema = WEBHOOK_SCHEMA
    elif path == "/webhook/unregister":
        schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    if schema is None:
        return None
    valid = fz.schema_objects(schema)
    return st.one_of(valid, fz.wrong_type_somewhere(valid)).map(fz.tame)


@st.composite
def concrete_path(draw: Any, path: str, world: dict[str, Any]) -> str:
    def value(name: str) -> str:
        known = {"task_id": world["task_id"], "webhook_id": world["webhook_id"]}.get(name)
        choice = draw(st.sampled_from(([known] if known else []) + HOSTILE_IDS + ["text"]))
        return quote(draw(fz.texts), safe="", errors="surrogatepass") if choice == "text" else choice

    return re.sub(r"\{(\w+)\}", lambda m: value(m.group(1)) or "x", path)


@st.composite
def query_string(draw: Any, names: list[str]) -> str:
    """The route's own query parameters and a few others, with hostile values."""
    pool = names + ["bogus", "status", "limit", "after", "cursor", "session_id", "last_event_id", "format"]
    chosen = draw(st.lists(st.sampled_from(pool), max_size=4))
    pairs = [f"{quote(n)}={draw(st.sampled_from(QUERY_VALUES))}" for n in chosen]
    return "?" + "&".join(pairs) if pairs else ""


@pytest.mark.parametrize("method, path", ROUTES, ids=[f"{m.upper()} {p}" for m, p in ROUTES])
def test_route_never_fails_on_hostile_input(fuzz_service, world, method, path):
    operation = build_spec()["paths"].get(path, {}).get(method, {})
    query_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
    objects = schema_objects(world, path)
    is_rpc = path in ("/mcp", "/", "/messages")
    log_start = fuzz_service.log_path.stat().st_size

    @given(st.data())
    def one(data: st.DataObject) -> None:
        url = data.draw(concrete_path(path, world))
        shaped = objects
        if path == "/tools/{name}":
            name = data.draw(st.sampled_from(sorted(world["tools"]) + ["no_such_tool", "dream_orchestrate_research"]
                                             + HOSTILE_IDS))
            url, shaped = f"/tools/{quote(name, safe='')}", schema_objects(world, f"/tools/{name}")
        url += data.draw(query_string(query_names))
        if path == "/messages" and data.draw(st.booleans()):
            url = f"/messages?session_id={world['session']}"
        headers = {"X-API-Key": KEY, "Content-Type": data.draw(st.sampled_from(fz.CONTENT_TYPES)),
                   "Accept": data.draw(st.sampled_from(["application/json", "text/event-stream", "*/*", "text/html",
                                                        "application/json, text/event-stream"]))}
        if is_rpc:
            headers["MCP-Protocol-Version"] = data.draw(st.sampled_from(
                ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28", "1999-01-01", ""]))
            headers["Mcp-Session-Id"] = data.draw(st.sampled_from(["", "no-such-session", "a b", "a" * 201]))
        if path.startswith("/stream/"):
            headers["Last-Event-ID"] = data.draw(st.sampled_from(["", "0", "-1", "1e9", "99999999999999999999", "x"]))
        body = data.draw(fz.hostile_bodies(shaped)) if method in ("post", "delete") else b""
        headers = {k: v for k, v in headers.items() if v}
        response = fuzz_service.request(method.upper(), url, data=body, headers=headers, stream=True, timeout=60)
        tally(f"{method.upper()} {path}")
        # the client normalises dot segments: `/tools/..` is a POST to `/`, the MCP endpoint
        served_as_rpc = is_rpc or urlsplit(response.url).path in ("/mcp", "/", "/messages")
        check_answer(response, f"{method.upper()} {url} {body[:200]!r}", rpc=served_as_rpc)

    if path == "/sse":
        # design: a dropped legacy stream holds its thread until its next keep-alive write;
        # hundreds of them would measure stream capacity, not input handling
        one = settings(max_examples=5)(one)
    one()
    assert_healthy(fuzz_service)
    assert bugs_logged(fuzz_service.log_path, log_start) == []


def test_every_served_route_is_fuzzed(app):
    """A route added to the app without being added here (or to the OpenAPI document) would escape the fuzz."""
    served = {(m.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", r.rule)) for r in app.url_map.iter_rules()
              for m in r.methods - {"HEAD", "OPTIONS"} if r.endpoint != "static"}
    assert served - set(ROUTES) == set(), "routes that escape the fuzz"


@pytest.mark.parametrize("raw, status", [
    (b"GET /tasks?cursor=" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 10000 + b"\r\n\r\n", 431),
    (b"\x00\xff NOT HTTP\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\n\r\n", 400),
])
def test_requests_gunicorn_refuses_itself_get_the_json_envelope(fuzz_service, raw, status):
    """Found by the long fuzz profile: a request line over Gunicorn's limit (a long query
    string) was answered with Gunicorn's HTML error page, before the app could answer JSON."""
    import socket

    with socket.create_connection(("127.0.0.1", fuzz_service.port), timeout=30) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), head
    assert b"Content-Type: application/json" in head
    assert set(json.loads(body)) == {"error", "message", "details"}
