"""The official MCP Python SDK, used the way a client author would (`mcp.Client(url)`),
against 4 real gunicorn workers on each store backend: every connect mode, concurrent
calls with random cancels in one session, and the stdio bridge (ping and cancel during a
long call, the endpoint stopped and restarted)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clients.test_sdk_clients import EXPECTED_TOOLS, SDK_PYTHON
from tests.fakes.openai_server import FakeServer
from tests.fakes.sources import FakeSources

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("sdk_protocol.py")
HANDSHAKE_VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]


def run_sdk(*args: str, timeout: float = 300) -> dict:
    done = subprocess.run([SDK_PYTHON, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fakes():
    llm = FakeServer().start()
    llm.state.latency = 0.25
    sources = FakeSources().start()
    yield llm, sources
    sources.stop()
    llm.stop()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def service(request, fakes, tmp_path_factory):
    from tests.conftest import Service

    llm, sources = fakes
    tmp = tmp_path_factory.mktemp(f"sdk-{request.param}")
    env = {"RATE_LIMIT_ENABLED": "0", "LLM_PROVIDER": "openai", "OPENAI_BASE_URL": llm.base_url,
           "OPENAI_API_KEY": "sk-test", **sources.env()}
    if request.param == "redis":
        env["STORE_URL"] = f"{request.getfixturevalue('redis_server')}/3"
    running = Service(tmp / "data", env, tmp / "service.log").start()
    yield running
    running.stop()


# design: the connect modes do not depend on the store; Redis is covered by the concurrent calls.
@pytest.mark.parametrize("service, mode", [("sqlite", "default"), ("sqlite", "legacy")], indirect=["service"])
def test_sdk_client_lists_calls_streams_and_cancels_in_each_mode(service, mode):
    seen = run_sdk("modes", f"{service.url}/mcp", mode)
    # the default mode probes 2026-07-28, is told the versions offered, and falls back to initialize
    assert seen["protocol"] == "2025-11-25" and seen["server"] == "mcp-orchestrator"
    assert set(seen["tools"]) == EXPECTED_TOOLS
    fixed = {"orchestrator://research/info", "orchestrator://search/info", "orchestrator://dead-letter"}
    assert fixed <= set(seen["resources"])
    assert all("/report." in r for r in set(seen["resources"]) - fixed)  # the key's finished tasks' reports
    assert seen["templates"] == ["orchestrator://tasks/{task_id}/report.docx", "orchestrator://tasks/{task_id}/report.html",
                                 "orchestrator://tasks/{task_id}/report.md", "orchestrator://tasks/{task_id}/report.pdf",
                                 "orchestrator://tasks/{task_id}/result", "orchestrator://tasks/{task_id}/status"]
    assert seen["prompts"] == ["research", "search"]
    calls = seen["calls"]
    assert calls["orchestrate_research"] == calls["orchestrate_search"] == {"error": False, "status": "completed"}
    assert all(not calls[name]["error"] for name in calls if name not in ("fetch_url", "cancel_orchestration"))
    # cancelling a finished task is a business error; fetch_url refuses a loopback address
    assert calls["cancel_orchestration"]["error"] and calls["fetch_url"]["error"]
    assert seen["progress"] > 0
    assert seen["info_tool"] == "orchestrate_research" and seen["prompt_mentions_tool"]
    assert seen["cancelled_status"] == "cancelled" and seen["cancelled_answered"] is False


# the protocol and the bridge do not depend on the store: one backend
@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_sdk_client_pinned_to_2026_is_told_the_versions_offered(service):
    seen = run_sdk("modes", f"{service.url}/mcp", "2026-07-28")
    assert seen == {"mcp_error": -32022, "data": {"supported": HANDSHAKE_VERSIONS, "requested": "2026-07-28"}}


@pytest.mark.parametrize("calls", [2, 10])
def test_concurrent_calls_in_one_session_end_cancelled_exactly_when_cancelled(service, calls):
    seed = random.randrange(1_000_000)
    seen = run_sdk("concurrent", f"{service.url}/mcp", str(calls), str(seed))
    plan = seen["calls"]
    assert len(plan) == calls
    for item in plan:
        expected = "cancelled" if item["cancel"] else "completed"
        assert item["status"] == expected, (seed, item)
        # a cancelled request gets no response
        assert item["answered"] is (not item["cancel"]), (seed, item)


# the protocol and the bridge do not depend on the store: one backend
@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_ping_and_cancel_go_through_the_stdio_bridge_during_a_long_call(service):
    seen = run_sdk("bridge", "--", sys.executable, "-m", "mcp.stdio", "--url", f"{service.url}/mcp")
    assert seen["protocol"] == "2025-11-25"
    assert seen["status_at_ping"] in ("pending", "running"), seen  # the ping did not wait for the call
    assert seen["cancelled_status"] == "cancelled" and seen["answered"] is False, seen


class Bridge:
    """python -m mcp.stdio --url, spoken to line by line."""

    def __init__(self, url: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "mcp.stdio", "--url", url], cwd=ROOT, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    def ask(self, message: dict) -> dict:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()[-3000:]
        return json.loads(line)

    def close(self) -> str:
        self.proc.stdin.close()
        self.proc.wait(30)
        return self.proc.stderr.read()


# the protocol and the bridge do not depend on the store: one backend
@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_the_bridge_answers_json_rpc_errors_while_the_endpoint_is_down_then_works_again(service):
    bridge = Bridge(f"{service.url}/mcp")
    try:
        init = bridge.ask({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "pytest", "version": "1"}}})
        assert init["result"]["protocolVersion"] == "2025-11-25"
        assert bridge.ask({"jsonrpc": "2.0", "id": 2, "method": "ping"}) == {"jsonrpc": "2.0", "id": 2, "result": {}}
        service.stop()
        for n in (3, 4):
            down = bridge.ask({"jsonrpc": "2.0", "id": n, "method": "tools/list"})
            assert down["id"] == n and down["error"]["code"] == -32000
            assert "unreachable" in down["error"]["message"]
        service.start()
        deadline = time.monotonic() + 30
        while True:  # the session lives in the store, so the restarted service still knows it
            back = bridge.ask({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
            if "result" in back or time.monotonic() > deadline:
                break
        assert {t["name"] for t in back["result"]["tools"]} == EXPECTED_TOOLS
    finally:
        stderr = bridge.close()
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)
def test_a_session_outlives_a_killed_worker_and_is_404_everywhere_once_deleted(service):
    import signal

    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = service.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "pytest", "version": "1"}}})
    session = {**headers, "Mcp-Session-Id": init.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    victim = service.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in service.worker_pids() or len(service.worker_pids()) < 4:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.2)
    # fresh connections spread over the workers, the new one included
    assert [service.post("/mcp", headers=session, json=ping).status_code for _ in range(12)] == [200] * 12
    assert service.request("DELETE", "/mcp", headers=session).status_code == 204
    assert [service.post("/mcp", headers=session, json=ping).status_code for _ in range(12)] == [404] * 12
    unknown = {**session, "Mcp-Session-Id": "never-issued"}
    assert service.post("/mcp", headers=unknown, json=ping).status_code == 404
