"""The seed review's own commands, run as written (host and port aside): its curl lines
against a 4-worker service, its import checks in a fresh interpreter, `python3 app.py` then
`curl /health`, and its service-manager lines."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mcp.store import open_store
from tests.conftest import ROOT, free_port
from tests.test_caddy import API_KEYS, KEY, caddy_factory  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
JSON = {"Content-Type": "application/json"}


def curl(command: str, port: int) -> dict:
    """Run one of the review's curl lines against the service on `port`; its JSON answer."""
    args = shlex.split(command.replace("localhost:5060", f"localhost:{port}"))
    done = subprocess.run([args[0], "-s", *args[1:]], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def sse_frames(lines) -> list[tuple[str | None, str]]:
    """(id, event type) of each frame of an SSE body, until the task's terminal event."""
    frames, current = [], {}
    for line in lines:
        if line.startswith("id: "):
            current["id"] = line[4:]
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line == "" and "event" in current:
            frames.append((current.get("id"), current["event"]))
            if current["event"] in ("workflow_complete", "workflow_error", "workflow_cancelled"):
                break
            current = {}
    return frames


@pytest.fixture
def reviewed(service_factory):
    return service_factory({"RATE_LIMIT_ORCHESTRATE": "100 per minute"})


def test_the_review_curl_lines_and_its_input_schema(reviewed):
    store = open_store(f"sqlite:///{reviewed.data_dir.resolve()}/orchestrator.db")
    search = curl("""curl -X POST http://localhost:5060/tools/orchestrate_search -H "Content-Type: application/json" """
                  """-d '{"query": "test", "max_agents": 2}'""", reviewed.port)
    assert search["status"] in ("pending", "running") and search["task_id"].startswith("search_")
    research = curl("""curl -X POST http://localhost:5060/tools/orchestrate_research """
                    """-H "Content-Type: application/json" -d '{"query": "test", "max_depth": 1}'""", reviewed.port)
    assert research["task_id"].startswith("research_")
    assert store.get_task(search["task_id"]).params["num_agents"] == 2
    assert store.get_task(research["task_id"]).params["depth"] == 1
    reviewed.wait_status(search["task_id"], {"completed"})
    result = reviewed.get(f"/tasks/{search['task_id']}/result").json()
    assert len(result["agent_results"]) == 2

    # alias and field with different values: 400 naming both; the same value is fine
    both = reviewed.post("/tools/orchestrate_search", json={"query": "test", "max_agents": 2, "num_agents": 3})
    assert both.status_code == 400 and set(both.json()["details"]["fields"]) == {"max_agents", "num_agents"}
    assert reviewed.post("/tools/orchestrate_search",
                         json={"query": "test", "max_agents": 2, "num_agents": 2}).status_code == 202
    out_of_range = reviewed.post("/tools/orchestrate_search", json={"query": "test", "max_agents": 11})
    assert out_of_range.status_code == 400 and "max_agents" in out_of_range.json()["details"]["fields"]
    assert reviewed.post("/tools/orchestrate_search", json={"query": "test", "max_depth": 1}).status_code == 400
    stream_and_wait = reviewed.post("/tools/orchestrate_search", json={"query": "test", "stream": True, "wait": True})
    assert stream_and_wait.status_code == 400
    assert set(stream_and_wait.json()["details"]["fields"]) == {"stream", "wait"}

    # the review's recommended schema: query, max_agents (1-10, default 5), timeout, stream
    tools = {t["name"]: t["inputSchema"] for t in reviewed.get("/tools").json()["tools"]}
    schema = tools["orchestrate_search"]["properties"]
    assert schema["max_agents"]["minimum"] == 1 and schema["max_agents"]["maximum"] == 10
    assert schema["num_agents"]["default"] == 5 and schema["timeout"]["minimum"] == 10
    assert schema["stream"] == {**schema["stream"], "type": "boolean", "default": False}
    assert {"max_agents", "max_depth", "depth", "task"} <= set(tools["orchestrate_research"]["properties"])


def test_stream_true_answers_with_the_tasks_event_stream(reviewed):
    response = requests.post(f"{reviewed.url}/tools/orchestrate_search", stream=True, timeout=60,
                             json={"query": "sqlite store", "num_agents": 2, "stream": True})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    lines = response.iter_lines(decode_unicode=True)
    # first a frame without an id naming the task and its URLs, then GET /stream/<id>'s body
    assert next(lines) == "event: task"
    handle = json.loads(next(lines).removeprefix("data: "))
    assert next(lines) == "" and next(lines).startswith("retry: ")
    assert handle["status_url"] == f"/tasks/{handle['task_id']}" and handle["stream_url"]
    posted = sse_frames(lines)
    assert posted[-1][1] == "workflow_complete" and posted[0][1] == "workflow_start"

    replayed = requests.get(f"{reviewed.url}{handle['stream_url']}", stream=True, timeout=60)
    assert sse_frames(replayed.iter_lines(decode_unicode=True)) == posted
    assert [int(i) for i, _ in posted] == list(range(1, len(posted) + 1))


def test_stream_true_through_caddy_arrives_live(service_factory, caddy_factory, fake_llm):
    fake_llm.state.latency = 0.5
    fake_llm.state.max_concurrency = 2
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test", "API_KEYS": API_KEYS, "TRUSTED_PROXIES": "1"})
    caddy = caddy_factory("Caddyfile", UPSTREAM=f"127.0.0.1:{service.port}")
    started = time.monotonic()
    response = requests.post(f"{caddy.url}/mcp/tools/orchestrate_research", headers=KEY, stream=True, timeout=60,
                             json={"query": "How does the store keep tasks across workers?", "num_agents": 6,
                                   "stream": True})
    assert response.status_code == 200
    lines = response.iter_lines(decode_unicode=True)
    assert next(lines) == "event: task"
    assert json.loads(next(lines).removeprefix("data: "))["stream_url"].startswith("/mcp/stream/")
    first_event_at = finished_at = None
    for line in lines:
        if line.startswith("id: ") and first_event_at is None:
            first_event_at = time.monotonic() - started
        if line == "event: workflow_complete":
            finished_at = time.monotonic() - started
            break
    # not buffered by the proxy: the first event long before the end (six agents two at a time)
    assert first_event_at is not None and finished_at is not None and first_event_at < finished_at - 1.0


@pytest.mark.parametrize("statement, names", [
    ("from orchestration import SwarmOrchestrator, BeltalowdaOrchestrator",
     ["SearchOrchestrator", "ResearchOrchestrator"]),
    ("from mcp import UnifiedMCPServer", ["McpServer"]),
])
def test_the_historical_import_names_resolve_lightly(statement, names):
    probe = (f"import threading, time; {statement}; "
             "print(' '.join(v.__name__ for k, v in sorted(locals().items())"
             " if isinstance(v, type) and not k.startswith('_'))); "
             "print(time.process_time(), threading.active_count())")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    classes, cost = done.stdout.splitlines()
    assert sorted(classes.split()) == sorted(names)
    cpu_seconds, threads = cost.split()
    assert float(cpu_seconds) < 1.0 and threads == "1"  # well under a second, and it starts nothing


CTRL_C_AS_IN_A_TERMINAL = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                           "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def test_python3_app_py_serves_for_a_first_test(tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATA_DIR": str(tmp_path / "data"), "DOCS_DIR": str(ROOT / "docs"),
           "LOG_FORMAT": "text"}
    helped = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0 and "not for production" in helped.stdout and "start.sh" in helped.stdout
    with open(tmp_path / "app.log", "wb") as log:
        # design: started as a terminal would start it, with Ctrl-C's default action. A suite run
        # in the background of a script (`./test.sh &`) inherits SIGINT ignored, and exec keeps it so.
        proc = subprocess.Popen([sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, "app.py"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            done = subprocess.run(["curl", "-s", f"http://localhost:{port}/health"], capture_output=True, text=True)
            if done.returncode == 0 and done.stdout:
                break
            assert time.monotonic() < deadline, (tmp_path / "app.log").read_text()
            time.sleep(0.3)
        health = json.loads(done.stdout)
        assert health["status"] == "healthy" and health["checks"]["runtime"]["started"] is True
        finished = requests.post(f"http://127.0.0.1:{port}/tools/orchestrate_search", timeout=60,
                                 json={"query": "sqlite store", "wait": True}).json()
        assert finished["status"] == "completed"
        output = (tmp_path / "app.log").read_text()
        assert "not for production" in output and "./start.sh" in output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.skipif(shutil.which("grep") is None, reason="the review pipes status into grep")
def test_the_service_manager_lines(tmp_path):
    home = tmp_path / "sm"
    env = {**os.environ, "SERVICE_MANAGER_HOME": str(home), "PORT": str(free_port()), "DATA_DIR": str(tmp_path / "d"),
           "SKIP_PIP_INSTALL": "1", "VENV_DIR": sys.prefix, "WORKERS": "2", "LOG_FORMAT": "text",
           "GRACEFUL_TIMEOUT": "5"}

    def sh(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)

    stopped = sh("python3 service_manager.py status | grep mcp-server")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    try:
        assert sh("python3 service_manager.py start mcp-server").returncode == 0
        running = sh("python3 service_manager.py status | grep mcp-server")
        assert running.returncode == 0 and "running" in running.stdout and "healthy" in running.stdout
        assert sh("python3 service_manager.py status").returncode == 0
        tail = sh(f"timeout 2 tail -f {home}/logs/mcp-server.log; true")
        assert "Booting worker" in tail.stdout
        assert Path(home / "logs" / "mcp-server.log").resolve() == (home / "logs" / "mcp-orchestrator.log").resolve()
    finally:
        sh("python3 service_manager.py stop mcp-server")
