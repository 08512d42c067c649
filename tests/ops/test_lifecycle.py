"""The service's life as an operator's supervisor sees it: systemd readiness, Ctrl-C, the logs
on stderr, and configuration read from .env. Real start.sh, real gunicorn."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.test_service import QUERY, event_log, sse_events, start

pytestmark = pytest.mark.slow


def copy_checkout(dest: Path) -> Path:
    """This checkout's files (not its venv, data or git) at `dest`, as a release or a fresh
    clone would have them."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns("venv", ".venv*", "data", ".git", "__pycache__",
                                                              ".pytest_cache", "node_modules", ".env"))
    return dest


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data"), "VENV_DIR": sys.prefix,
           "SKIP_PIP_INSTALL": "1", "WORKERS": "3", "GRACEFUL_TIMEOUT": "10", "DOCS_DIR": str(ROOT / "docs")}
    env.pop("NOTIFY_SOCKET", None)
    return {**env, **extra}


class NotifyListener:
    """The datagram socket systemd listens on for a Type=notify service."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


def launch(root: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([str(root / "start.sh")], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def shut(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_ready_is_sent_only_when_every_worker_has_booted_and_health_is_healthy(tmp_path):
    listener = NotifyListener(tmp_path / "notify.sock")
    env = base_env(tmp_path, NOTIFY_SOCKET=listener.path)
    began = time.monotonic()
    proc = launch(ROOT, env, tmp_path / "good.log")
    try:
        message = listener.receive(90)
        took = time.monotonic() - began
        assert message and "READY=1" in message, (tmp_path / "good.log").read_text()[-3000:]
        health = requests.get(f"http://127.0.0.1:{env['PORT']}/health", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        assert health.json()["checks"]["runtime"]["live_workers"] == 3
        workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) == 3
        print(f"start.sh -> READY=1 in {took:.2f} s")  # reported with -s; the issue wants <= 5 s
    finally:
        shut(proc)
        listener.close()

    # a release whose app cannot even be imported never says READY: systemd fails the unit
    broken = copy_checkout(tmp_path / "release")
    (broken / "app.py").write_text("raise RuntimeError('this release cannot import')\n")
    listener = NotifyListener(tmp_path / "notify2.sock")
    env = base_env(tmp_path, NOTIFY_SOCKET=listener.path)
    proc = launch(broken, env, tmp_path / "broken.log")
    try:
        assert proc.wait(90) != 0
        assert listener.receive(0.5) is None, "READY=1 was sent for a release that cannot import"
    finally:
        shut(proc)
        listener.close()


@pytest.mark.serial  # its bound: stopped well before GRACEFUL_TIMEOUT
def test_ctrl_c_hands_running_tasks_back_like_sigterm(service_factory, fake_llm, tmp_path):
    fake_llm.state.latency = 0.8
    fake_llm.state.max_concurrency = 2
    env = {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test"}
    first = service_factory(env, data_dir=tmp_path / "shared")
    handle = start(first, "orchestrate_research", query=QUERY, num_agents=6)
    task_id = handle["task_id"]
    stream = first.get(handle["stream_url"], stream=True, timeout=60)  # a dashboard watching it
    deadline = time.monotonic() + 30
    while not any(e["event_type"] == "agent_complete" for e in event_log(first, task_id)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    began = time.monotonic()
    os.killpg(first.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
    first.proc.wait(30)
    stopped_in = time.monotonic() - began
    assert sse_events(stream)[-1]["event"] == "reconnect"  # the watcher is told to reconnect
    log = first.log_path.read_text()
    assert "SIGKILL" not in log, log[-3000:]
    assert stopped_in < 10, f"took {stopped_in:.1f} s: killed at GRACEFUL_TIMEOUT rather than handed back"
    second = service_factory(env, data_dir=tmp_path / "shared")
    final = second.wait_status(task_id, {"completed", "failed", "cancelled"}, timeout=90)
    assert final["status"] == "completed"
    events = event_log(second, task_id)
    types = [e["event_type"] for e in events]
    interrupted = types.index("workflow_interrupted")
    assert events[interrupted]["data"]["reason"] == "worker shutting down"
    assert types[interrupted + 1] == "workflow_resumed"


def test_every_stderr_line_is_json_and_each_request_has_an_access_line(service_factory):
    service = service_factory({"LOG_FORMAT": "json", "API_KEYS": "ops:k3y-that-stays-secret"})
    key = {"X-API-Key": "k3y-that-stays-secret"}
    assert service.get("/tasks", headers={**key, "X-Request-ID": "follow-me-42"}).status_code == 200
    assert service.get("/health/live?token=query-secret", headers={"X-Request-ID": "live-1"}).status_code == 200
    assert service.get("/tasks/research_0123456789abcdef", headers=key).status_code == 404
    time.sleep(0.5)  # the access line is written once the response is sent
    service.stop()
    lines = [line for line in service.log_path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line}")
    names = {r["name"] for r in records}
    assert {"start.sh", "gunicorn.error", "mcp.access"} <= names
    access = {r["request_id"]: r for r in records if r["name"] == "mcp.access"}
    one = access["follow-me-42"]
    assert (one["key_name"], one["method"], one["route"], one["status"]) == ("ops", "GET", "/tasks", 200)
    assert one["duration_ms"] >= 0 and one["time"] and one["level"] == "INFO"
    assert access["live-1"]["route"] == "/health/live" and access["live-1"]["path"] == "/health/live"
    assert any(r["route"] == "/tasks/<task_id>" and r["status"] == 404 for r in access.values())
    text = service.log_path.read_text()
    assert "k3y-that-stays-secret" not in text and "query-secret" not in text


def test_dotenv_is_read_alike_by_start_sh_the_manager_and_preflight_and_bad_values_are_named(tmp_path):
    release = copy_checkout(tmp_path / "release")
    port = free_port()
    (release / ".env").write_text(f"""# the operator's configuration
export PORT="{port}"   # quoted, with a comment
WORKERS = 2
SKIP_PIP_INSTALL=true
DATA_DIR='{tmp_path / "data"}'
LOG_FORMAT=text
""")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PORT", "WORKERS", "SKIP_PIP_INSTALL", "DATA_DIR", "LOG_FORMAT", "NOTIFY_SOCKET")}
    env.update(VENV_DIR=sys.prefix, SERVICE_MANAGER_HOME=str(tmp_path / "sm"), GRACEFUL_TIMEOUT="5",
               DOCS_DIR=str(ROOT / "docs"))
    manager = [sys.executable, str(release / "service_manager.py")]
    try:
        started = subprocess.run([*manager, "start", "mcp-orchestrator"], env=env, capture_output=True, text=True,
                                 timeout=90)
        assert started.returncode == 0 and f"port {port}" in started.stdout, started.stdout + started.stderr
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["checks"]["runtime"]["live_workers"] == 2
        assert subprocess.run([*manager, "status", "mcp-orchestrator"], env=env, timeout=30).returncode == 0
        log = (tmp_path / "sm" / "logs" / "mcp-orchestrator.log").read_text()
        assert "SKIP_PIP_INSTALL=true: not installing dependencies" in log
    finally:
        subprocess.run([*manager, "stop", "mcp-orchestrator"], env=env, capture_output=True, timeout=60)

    def preflight(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(release / "preflight.sh")], env={**env, **extra}, capture_output=True, text=True,
                              timeout=60)

    assert preflight().returncode == 0
    bad = preflight(PORT="abc", WORKERS="zero")
    assert bad.returncode == 1 and "PORT='abc'" in bad.stdout and "WORKERS='zero'" in bad.stdout
    (tmp_path / "a-file").write_text("")
    under_a_file = preflight(STORE_URL=f"sqlite:///{tmp_path / 'a-file' / 'orchestrator.db'}")
    assert under_a_file.returncode == 1 and "STORE_URL=" in under_a_file.stdout and "is a file" in under_a_file.stdout
    refused = subprocess.run([str(release / "start.sh")], env={**env, "WORKERS": "zero"}, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 1 and "WORKERS='zero'" in refused.stderr and "Traceback" not in refused.stderr
    (release / ".env").write_text("PORT 6105\n")
    assert "FAIL  settings" in preflight().stdout
    refused = subprocess.run([str(release / "start.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and ".env:1: not a KEY=value assignment" in refused.stderr
