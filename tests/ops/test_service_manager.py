"""service_manager.py and preflight.sh, run as an operator runs them."""

from __future__ import annotations

import json
import re
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

pytestmark = pytest.mark.slow


def run(command: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "SERVICE_MANAGER_HOME": str(tmp_path / "sm"), "PORT": str(free_port()),
            "DATA_DIR": str(tmp_path / "data"), "SKIP_PIP_INSTALL": "1", "VENV_DIR": sys.prefix,
            "WORKERS": "2", "LOG_FORMAT": "text", "MONITOR_INTERVAL": "0.5", "MONITOR_BACKOFF": "0.5",
            "GRACEFUL_TIMEOUT": "5"}


def test_preflight_passes_on_a_free_port_and_names_a_busy_one(env):
    ok = run([str(ROOT / "preflight.sh")], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(line.startswith("ok") for line in ok.stdout.splitlines())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["PORT"])))
        busy.listen()
        refused = run([str(ROOT / "preflight.sh")], env)
    assert refused.returncode == 1
    assert f"FAIL  port           {env['PORT']} is in use" in refused.stdout
    assert "failed: port" in refused.stderr
    exposed = run([str(ROOT / "preflight.sh")], {**env, "BIND_ADDRESS": "0.0.0.0"})
    assert exposed.returncode == 1 and "API_KEYS" in exposed.stdout
    no_streams = run([str(ROOT / "preflight.sh")], {**env, "THREADS": "16"})
    assert no_streams.returncode == 1 and "STREAM_RESERVE_THREADS=16" in no_streams.stdout


def test_start_status_crash_monitor_restart_stop(env):
    manager = [sys.executable, str(ROOT / "service_manager.py")]
    try:
        assert run([*manager, "start", "mcp-orchestrator"], env).returncode == 0
        assert run([*manager, "status", "mcp-server"], env).returncode == 0
        assert run([*manager, "start-monitor", "mcp-orchestrator"], env).returncode == 0
        pid = int(Path(env["SERVICE_MANAGER_HOME"], "mcp-orchestrator.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        assert run([*manager, "status", "mcp-orchestrator"], env).returncode == 1
        deadline = time.monotonic() + 60
        while run([*manager, "status", "mcp-orchestrator"], env).returncode != 0:
            assert time.monotonic() < deadline, run([*manager, "logs", "mcp-orchestrator"], env).stdout[-2000:]
            time.sleep(0.5)
        state = json.loads(run([*manager, "monitor-status"], env).stdout)
        assert state["running"] and state["restarts"][0]["reason"] == "process not running"
        assert "Booting worker" in run([*manager, "logs", "mcp-orchestrator"], env).stdout
    finally:
        run([*manager, "stop-monitor"], env)
        run([*manager, "stop", "mcp-orchestrator"], env)
    assert run([*manager, "status", "mcp-orchestrator"], env).returncode == 1


def test_a_stale_pid_file_is_not_trusted(env, tmp_path):
    home = Path(env["SERVICE_MANAGER_HOME"])
    home.mkdir(parents=True)
    (home / "mcp-orchestrator.pid").write_text(f"{os.getpid()} 1\n")  # a live pid, another start time
    status = run([sys.executable, str(ROOT / "service_manager.py"), "status", "mcp-orchestrator"], env)
    assert status.returncode == 1 and "not running" in status.stdout


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is installed by ./test.sh")
def test_shell_scripts_pass_shellcheck():
    scripts = [str(ROOT / name) for name in ("start.sh", "test.sh", "preflight.sh", "deploy.sh", "bench/run.sh", ".ci/run")]
    checked = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, cwd=ROOT)
    assert checked.returncode == 0, checked.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    unit = (ROOT / "deploy" / "mcp-orchestrator.service").read_text()
    assert "Type=notify" in unit and "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    # the unit names the deployed paths; point them at this checkout so verify can resolve them
    local = tmp_path / "mcp-orchestrator.service"
    local.write_text(unit.replace("/opt/mcp-orchestrator/current", str(ROOT)))
    checked = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr


MANAGER = [sys.executable, str(ROOT / "service_manager.py")]


def manage(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return run([*MANAGER, *args], env, timeout)


def wait_until(check, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def answers_health(port: int | str) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def squatter(env):
    """Another program already serving /health on the service's port, as a hand-started
    ./start.sh would (it even says it is an mcp-orchestrator)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b'{"service": "mcp-orchestrator", "status": "alive"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(env["PORT"])), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_start_refuses_a_port_someone_else_serves_instead_of_claiming_success(env, squatter):
    home = Path(env["SERVICE_MANAGER_HOME"])
    home.mkdir(parents=True)
    (home / "mcp-orchestrator.pid").write_text(f"{os.getpid()} 1\n")  # stale: a live pid, another start time
    started = manage(env, "start", "mcp-orchestrator")
    assert started.returncode == 1, started.stdout
    assert f"port {env['PORT']} is already in use by an mcp-orchestrator this manager did not start" in started.stderr
    assert "started" not in started.stdout
    status = manage(env, "status", "mcp-orchestrator")
    assert status.returncode == 1 and f"port {env['PORT']} is held by" in status.stdout
    assert answers_health(env["PORT"])  # the other service was left alone


def test_status_restart_and_the_monitor_follow_the_port_the_service_was_started_with(env):
    started_port = env["PORT"]
    other = {**env, "PORT": str(free_port())}  # the shell of a later call, with another PORT
    try:
        assert manage(env, "start", "mcp-orchestrator").returncode == 0
        status = manage(other, "status", "mcp-orchestrator")
        assert status.returncode == 0 and f"healthy on port {started_port}" in status.stdout
        assert manage(other, "restart", "mcp-orchestrator").returncode == 0
        assert answers_health(started_port) and not answers_health(other["PORT"])
        assert manage(other, "start-monitor", "mcp-orchestrator").returncode == 0
        pid = int(Path(env["SERVICE_MANAGER_HOME"], "mcp-orchestrator.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: manage(other, "status", "mcp-orchestrator").returncode == 0, what="the restart")
        assert answers_health(started_port) and not answers_health(other["PORT"])
        env_record = Path(env["SERVICE_MANAGER_HOME"], "mcp-orchestrator.env")
        assert env_record.stat().st_mode & 0o077 == 0  # it may hold keys: the owner's only
    finally:
        manage(env, "stop-monitor")
        manage(env, "stop", "mcp-orchestrator")


def test_a_monitor_that_gave_up_watches_again_after_start_and_a_stop_stays_stopped(env):
    env = {**env, "MONITOR_BACKOFF": "0.1"}
    home = Path(env["SERVICE_MANAGER_HOME"])
    record = home / "mcp-orchestrator.env"
    try:
        assert manage(env, "start", "mcp-orchestrator").returncode == 0
        assert manage(env, "start-monitor", "mcp-orchestrator").returncode == 0
        # break the recorded configuration so every restart fails at once, then kill the service
        good = json.loads(record.read_text())
        record.write_text(json.dumps({**good, "WORKERS": "zero"}))
        os.kill(int((home / "mcp-orchestrator.pid").read_text().split()[0]), signal.SIGKILL)
        wait_until(lambda: json.loads(manage(env, "monitor-status").stdout).get("gave_up"), 120, "the monitor to give up")
        gave_up = [line for line in (home / "logs" / "monitor.log").read_text().splitlines() if "gave up" in line]
        assert gave_up and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", gave_up[0]), gave_up
        # the documented recovery: fix the cause, start the service, start-monitor again
        assert manage(env, "start", "mcp-orchestrator").returncode == 0
        assert manage(env, "start-monitor", "mcp-orchestrator").returncode == 0
        wait_until(lambda: not json.loads(manage(env, "monitor-status").stdout)["gave_up"], what="watching again")
        pid = int((home / "mcp-orchestrator.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: manage(env, "status", "mcp-orchestrator").returncode == 0, 90, "the restart after kill -9")
        assert int((home / "mcp-orchestrator.pid").read_text().split()[0]) != pid
        # an operator's stop is not undone by the monitor
        assert manage(env, "stop", "mcp-orchestrator").returncode == 0
        time.sleep(4)  # eight monitor intervals
        assert manage(env, "status", "mcp-orchestrator").returncode == 1
        assert "stopped on purpose" in (home / "logs" / "monitor.log").read_text()
    finally:
        manage(env, "stop-monitor")
        manage(env, "stop", "mcp-orchestrator")


def test_backup_copies_the_running_services_store_and_refuses_a_missing_one(env, tmp_path):
    other_shell = {**env, "DATA_DIR": str(tmp_path / "elsewhere")}  # not the service's DATA_DIR
    try:
        assert manage(env, "start", "mcp-orchestrator").returncode == 0
        task = requests.post(f"http://127.0.0.1:{env['PORT']}/tools/orchestrate_search",
                             json={"query": "backups of the store", "wait": True}, timeout=60).json()
        done = manage(other_shell, "backup", "mcp-orchestrator", str(tmp_path / "backups"))
        assert done.returncode == 0, done.stderr
        copy = Path(done.stdout.strip().rsplit(" to ", 1)[1])
        assert copy.parent == tmp_path / "backups"
        import sqlite3

        with sqlite3.connect(copy) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT COUNT(*) FROM tasks WHERE task_id = ?", (task["task_id"],)).fetchone()[0] == 1
    finally:
        manage(env, "stop", "mcp-orchestrator")
    nothing = {**other_shell, "SERVICE_MANAGER_HOME": str(tmp_path / "fresh")}
    refused = manage(nothing, "backup", "mcp-orchestrator", str(tmp_path / "backups2"))
    assert refused.returncode == 1 and "no database at" in refused.stderr
    assert not (tmp_path / "elsewhere" / "orchestrator.db").exists()  # not created empty on the way


def test_a_large_log_is_rotated_at_start_keeping_three(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    import service_manager

    log = tmp_path / "mcp-orchestrator.log"
    for n in (1, 2, 3):
        log.with_name(f"mcp-orchestrator.log.{n}").write_text(f"old {n}\n")
    log.write_bytes(b"x" * (service_manager.LOG_ROTATE_BYTES + 1))
    service_manager.rotate(log)
    assert not log.exists()
    assert log.with_name("mcp-orchestrator.log.1").stat().st_size == service_manager.LOG_ROTATE_BYTES + 1
    assert [log.with_name(f"mcp-orchestrator.log.{n}").read_text() for n in (2, 3)] == ["old 1\n", "old 2\n"]
    small = tmp_path / "small.log"
    small.write_text("a line\n")
    service_manager.rotate(small)
    assert small.read_text() == "a line\n"
