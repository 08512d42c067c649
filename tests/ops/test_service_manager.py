"""service_manager.py and preflight.sh, run as an operator runs them."""

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
