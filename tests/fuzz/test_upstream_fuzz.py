"""The fuzz of what comes back from outside, against a real four-worker service: model
answers (invalid JSON plans, malformed tool calls, garbage and wrong-shaped bodies, streams
cut short, lone surrogates) from the local OpenAI and Anthropic fakes, search API answers of
the wrong shape, and webhook receivers that are slow, huge or garbage. None may produce a
5xx, an answer a client cannot parse, or a failed task where the task should degrade."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import Service
from tests.fakes import wikipedia_server
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.http_fake import FakeApi
from tests.fakes.llm_server import Trick
from tests.fakes.openai_server import FakeServer
from tests.fuzz.checks import assert_healthy, check_answer
from tests.fuzz.conftest import KEY, TASK_EXAMPLES, bugs_logged, tally

pytestmark = pytest.mark.slow
HEADERS = {"X-API-Key": KEY}
TERMINAL = {"completed", "failed", "cancelled"}

# What a model may say instead of its answer (it arrives well-formed on the wire).
PLAN_TEXTS = ['{"subtasks": [', '{"subtasks": "all of it"}', '{"subtasks": [{"title": 5}]}', "[1, 2, 3]", "null",
              '{"subtasks": [{"title": "\ud800 lone", "query": "q", "description": "d"}]}',
              '{"subtasks": ' + "[" * 5000 + "]" * 5000 + "}", '{"subtasks": [NaN]}', "", "I would rather not."]
TEXTS = ["", "lone \ud800 surrogate [1] [S1]", "[999] [S999] invented citations", "x" * 200_000, "\x00\x01\x02",
         "```json\n{\"a\": 1}\n```", "[" * 3000]
# What a broken server may write as the whole body of a 200.
OPENAI_RAW = [b"", b"{", b"not json", b"[" * 100_000, b'{"choices": []}', b'{"choices": [{"message": null}]}',
              b'{"choices": [{"message": {"role": "assistant", "content": "lone \\ud800"}}], "model": "m"}',
              b'{"choices": [{"message": {"content": 5}}], "usage": {"prompt_tokens": -1}}', b"\xff\xfe\x00",
              b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",'
              b' "content": "ok"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1e400}}']
ANTHROPIC_RAW = [b"", b"{", b'{"type": "message", "content": "text"}',
                 b'{"type": "message", "role": "assistant", "model": "m", "content": [{"type": "tool_use", "id": "t",'
                 b' "name": "submit_plan", "input": [1, 2]}], "usage": {"input_tokens": 1, "output_tokens": 1}}',
                 b'{"type": "message", "role": "assistant", "model": "m", "content": [{"type": "tool_use", "id": "t",'
                 b' "name": "submit_plan", "input": {"subtasks": {"deep": ' + b"[" * 3000 + b"]" * 3000 + b'}}}],'
                 b' "usage": {"input_tokens": 1, "output_tokens": 1}}',
                 b'{"type": "message", "role": "assistant", "model": "m", "content": [{"type": "text", "text": '
                 b'"lone \\udfff"}], "usage": {"input_tokens": 1, "output_tokens": 1}}']
STREAM_RAW = [b"data: {\"choices\": [{\"delta\": {\"content\": \"cut sho", b"data: garbage\n\n", b": only a comment\n\n",
              b'event: message_start\ndata: {"type": "message_start", "message": {"model": "m", "usage": {}}}\n\n'
              b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"type": "text_d',
              b'data: {"choices": [{"delta": {"content": "lone \\ud800"}}]}\n\n', b"\xff" * 100]


def tricks(provider: str) -> st.SearchStrategy[Trick | None]:
    raw = OPENAI_RAW if provider == "openai" else ANTHROPIC_RAW
    return st.one_of(st.none(), st.builds(Trick, text=st.sampled_from(TEXTS)),
                     st.builds(Trick, raw=st.sampled_from(raw)))


@st.composite
def misbehaviour(draw: Any) -> tuple[str, dict[str, Trick | None]]:
    """(provider, the trick each role plays): at most one role misbehaves per call kind."""
    provider = draw(st.sampled_from(["openai", "anthropic"]))
    plan = draw(st.one_of(st.none(), st.builds(Trick, text=st.sampled_from(PLAN_TEXTS)),
                          st.builds(Trick, raw=st.sampled_from(OPENAI_RAW if provider == "openai" else ANTHROPIC_RAW))))
    worker = draw(st.one_of(st.none(), st.builds(Trick, text=st.sampled_from(TEXTS)),
                            st.builds(Trick, raw=st.sampled_from(STREAM_RAW))))
    return provider, {"planner": plan, "worker": worker, "synthesis": draw(tricks(provider))}


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that misbehaves as `mode` says; records what it was sent."""

    daemon_threads = True

    def __init__(self, mode: str):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.mode = mode
        self.bodies: list[bytes] = []
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        mode = self.server.mode
        try:
            if mode == "garbage":
                self.wfile.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
            elif mode == "slow":  # no answer for longer than a delivery may take
                time.sleep(15)
                self._head(200, 0)
            elif mode == "close":
                self.connection.shutdown(socket.SHUT_RDWR)
            elif mode == "drip":  # headers, then a body one byte at a time, for a long time
                self._head(200, 1_000_000)
                for _ in range(120):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            elif mode == "huge":
                self._head(200, 50_000_000)
                chunk = b"y" * 1_000_000
                for _ in range(50):
                    self.wfile.write(chunk)
            elif mode == "redirect":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif mode == "error":
                body = b"<html>500 oops</html>"
                self._head(500, len(body))
                self.wfile.write(body)
            else:
                self._head(204, 0)
        except OSError:
            pass
        self.close_connection = True

    def _head(self, status: int, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(length))
        self.end_headers()


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Any:
    """The service wired to fakes for everything outside: two model APIs, a search API and
    webhook receivers, with retries kept short so a misbehaving answer costs little time."""
    openai, anthropic = FakeServer().start(), FakeAnthropicServer().start()
    source_reply: dict[str, Any] = {"respond": wikipedia_server.respond}
    wiki = FakeApi(lambda request: source_reply["respond"](request), "/w/api.php").start()
    tmp = tmp_path_factory.mktemp("upstream")
    service = Service(tmp / "data", {
        "API_KEYS": f"fuzzer:{KEY}", "RATE_LIMIT_ENABLED": "0", "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": openai.base_url, "OPENAI_API_KEY": "sk-fuzz", "ANTHROPIC_BASE_URL": anthropic.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-fuzz", "LLM_MAX_ATTEMPTS": "2", "LLM_RETRY_MAX_SECONDS": "1",
        "WIKIPEDIA_API_URL": wiki.url, "WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_RETRY_BASE": "0.5"},
        tmp / "service.log").start()
    yield {"service": service, "openai": openai, "anthropic": anthropic, "source_reply": source_reply}
    service.stop()
    for server in (openai, anthropic, wiki):
        server.stop()


def run_task(service: Service, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    started = service.post(f"/tools/{tool}", headers=HEADERS, json=args)
    assert started.status_code == 202, started.text
    task_id = started.json()["task_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = check_answer(service.get(f"/tasks/{task_id}", headers=HEADERS, stream=True), "status")
        if status["status"] in TERMINAL:
            break
        time.sleep(0.2)
    for path in (f"/tasks/{task_id}/result", f"/tasks/{task_id}/events", f"/stream/{task_id}"):
        check_answer(service.get(path, headers=HEADERS, stream=True), path)
    return check_answer(service.get(f"/tasks/{task_id}/result", headers=HEADERS, stream=True), "result")


def test_model_answers_never_fail_a_task_that_should_degrade(outside):
    service = outside["service"]
    log_start = service.log_path.stat().st_size

    @TASK_EXAMPLES
    @given(misbehaviour())
    def one(case: tuple[str, dict[str, Trick | None]]) -> None:
        provider, plan = case
        fake = outside[provider]
        fake.state.trick = lambda ask: plan.get(ask.role)
        try:
            result = run_task(service, "orchestrate_research", {
                "query": "How do gunicorn workers share state?", "num_agents": 2, "enable_drummer": False,
                "provider": provider, "sources": ["local"]})
        finally:
            fake.state.trick = None
        tally(f"model answers via {provider}")
        if plan["worker"] is not None and plan["worker"].raw is not None:
            # every worker agent's model call answered garbage: nothing to report, so the
            # task fails, naming why; anything less degrades
            assert result["status"] in ("completed", "failed"), result
            if result["status"] == "failed":
                assert result["error"].startswith("every worker agent failed: "), result["error"]
                assert "answered something unusable" in result["error"], result["error"]
        else:
            assert result["status"] == "completed", (plan, result.get("error"))

    one()
    assert_healthy(service)
    assert bugs_logged(service.log_path, log_start) == []


SOURCE_BODIES = [b"", b"not json", b"[]", b"null", b'{"query": null}', b'{"query": {"pages": "none"}}',
                 b'{"query": {"pages": [null, 5, "x"]}}', b'{"query": {"pages": [{"title": 5, "extract": []}]}}',
                 b'{"query": {"pages": [{"pageid": 1, "title": "t", "extract": "lone \\ud800", "index": 1,'
                 b' "fullurl": "https://example.org/"}]}}',
                 b'{"query": {"pages": [{"pageid": 1, "title": "' + b"t" * 100_000 + b'", "index": 1}]}}',
                 b"[" * 100_000, b'{"query": {"pages": [{"pageid": 1e400}]}}', b"\xff\xfe"]


def test_search_api_answers_of_the_wrong_shape_degrade(outside):
    service = outside["service"]
    log_start = service.log_path.stat().st_size

    @TASK_EXAMPLES
    @given(st.sampled_from(SOURCE_BODIES), st.sampled_from([200, 200, 500, 429, 404]),
           st.sampled_from(["application/json", "text/html"]))
    def one(body: bytes, status: int, kind: str) -> None:
        outside["source_reply"]["respond"] = lambda request: (status, kind, body)
        try:
            tool = service.post("/tools/wikipedia_search", headers=HEADERS, stream=True,
                                json={"query": f"fuzz {len(body)} {status}", "limit": 3})
            assert tool.status_code in (200, 502), tool.status_code  # 502 upstream_error names the source
            check_answer(tool, "wikipedia_search") if tool.status_code == 200 else tool.close()
            result = run_task(service, "orchestrate_search", {
                "query": f"reciprocal rank fusion {len(body)} {status} {kind}", "num_agents": 2,
                "agent_types": ["encyclopedia", "local"], "provider": "extractive"})
        finally:
            outside["source_reply"]["respond"] = wikipedia_server.respond
        tally("search API answers (wikipedia)")
        assert result["status"] == "completed", result.get("error")

    one()
    assert_healthy(service)
    assert bugs_logged(service.log_path, log_start) == []


def test_webhook_receivers_that_misbehave_do_not_hold_up_the_others(outside):
    service = outside["service"]
    # drip and huge answer 200 at once (then take forever, or 50 MB, for the body): delivered;
    # the others never answer 2xx: retried, never delivered
    bad = {mode: Receiver(mode) for mode in ("drip", "huge", "slow", "garbage", "close", "redirect", "error")}
    good = Receiver("ok")
    hooks = {}
    for name, receiver in [*bad.items(), ("ok", good)]:
        created = service.post("/webhooks", headers=HEADERS, json={"url": receiver.url, "events": ["*"]})
        assert created.status_code == 201, created.text
        hooks[name] = created.json()["id"]
    try:
        result = run_task(service, "orchestrate_search", {"query": "webhook fuzz", "num_agents": 1,
                                                          "provider": "extractive"})
        assert result["status"] == "completed"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(b"workflow_complete" in body for body in good.bodies):
            time.sleep(0.2)
        assert any(b"workflow_complete" in body for body in good.bodies), "a slow receiver held up the others"

        def delivered(name: str) -> bool:
            log = service.get(f"/webhooks/{hooks[name]}/deliveries", headers=HEADERS).json()["deliveries"]
            return any(d["status"] == "delivered" for d in log)

        # a receiver holds the body before its answer reaches the service, which records it then
        while time.monotonic() < deadline and not all(delivered(name) for name in ("drip", "huge", "ok")):
            time.sleep(0.2)
        for name, hook_id in hooks.items():
            deliveries = check_answer(service.get(f"/webhooks/{hook_id}/deliveries", headers=HEADERS, stream=True),
                                      name)["deliveries"]
            tally(f"webhook receiver: {name}")
            assert deliveries, name
            if name in ("drip", "huge", "ok"):
                assert any(d["status"] == "delivered" for d in deliveries), (name, deliveries)
            else:
                assert all(d["status"] != "delivered" for d in deliveries), (name, deliveries)
        assert all(json.loads(body) for body in good.bodies)
    finally:
        for hook_id in hooks.values():
            service.request("DELETE", f"/webhooks/{hook_id}", headers=HEADERS)
        for receiver in [*bad.values(), good]:
            receiver.shutdown()
            receiver.server_close()
    assert_healthy(service)

