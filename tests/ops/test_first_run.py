"""From nothing, as a newcomer on a new host: a fresh clone, every cache and deploy root
removed, then the README's commands, the service manager, the deploy and the benchmark
entry point, each creating what it needs itself (venvs by a real pip install, offline from
the session's wheelhouse). Nothing is seeded.

Everything lives under the test's temporary directory: the clone (its `venv` and `data`),
HOME (so `~/.cache/mcp-orchestrator` and `~/.service_manager` are the test's own) and
DEPLOY_ROOT. The only departure from the README is the port, a free one instead of 5060."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

# design: four first installs (README, service manager, deploy, bench), each a real pip run
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# A first install under a loaded machine takes minutes; a bound, not a target.
SETUP_SECONDS = 900
# Variables of the test run that a newcomer's shell would not have.
NOT_A_NEWCOMERS = ("VENV_DIR", "DATA_DIR", "SKIP_PIP_INSTALL", "DEPLOY_ROOT", "SERVICE_MANAGER_HOME",
                   "MCP_CLIENTS_DIR", "PEER_VENV", "STORE_URL", "DOCS_DIR", "PROMETHEUS_MULTIPROC_DIR",
                   "MCP_SDK_PYTHON", "WORKERS", "THREADS")


class Host:
    """A fresh clone, a HOME and a deploy root, all under one temporary directory."""

    def __init__(self, tmp: Path, pip_env: dict[str, str]):
        self.clone = tmp / "mcp-orchestrator"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(self.clone)], check=True)
        self.home = tmp / "home"
        self.home.mkdir()
        self.deploy_root = tmp / "opt" / "mcp-orchestrator"
        self.port = free_port()
        self.env = {**os.environ, **pip_env, "HOME": str(self.home), "PORT": str(self.port), "LOG_FORMAT": "text",
                    "GRACEFUL_TIMEOUT": "5"}
        for name in NOT_A_NEWCOMERS:
            self.env.pop(name, None)
        self.log = tmp / "first-run.log"

    @property
    def caches(self) -> list[Path]:
        return [self.clone / "venv", self.clone / "data", self.home / ".cache", self.home / ".service_manager",
                self.deploy_root]

    def wipe(self) -> None:
        """`rm -rf` of every cache and the deploy root."""
        subprocess.run(["rm", "-rf", *map(str, self.caches)], check=True)
        assert not any(path.exists() for path in self.caches)

    def run(self, *command: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([str(c) for c in command], cwd=self.clone, env=env or self.env, capture_output=True,
                              text=True, timeout=SETUP_SECONDS)
        with open(self.log, "a") as log:
            log.write(f"$ {' '.join(map(str, command))} -> {done.returncode}\n{done.stdout}{done.stderr}\n")
        return done

    def curl(self, path: str, *args: str) -> str:
        done = subprocess.run(["curl", "-s", "--max-time", "120", f"localhost:{self.port}{path}", *args],
                              capture_output=True, text=True, timeout=130)
        return done.stdout

    def health(self) -> dict:
        body = self.curl("/health")
        return json.loads(body) if body.startswith("{") else {}

    def stop_managed(self) -> None:
        for manager in (self.clone / "service_manager.py", self.deploy_root / "current" / "service_manager.py"):
            if manager.exists():
                subprocess.run(["python3", str(manager), "stop", "mcp-orchestrator"], env=self.env,
                               capture_output=True, timeout=60)


@pytest.fixture
def host(tmp_path, offline_pip):
    fresh = Host(tmp_path, offline_pip)
    yield fresh
    fresh.stop_managed()


def readme_run(host: Host) -> None:
    """README "Run" and "Try it with curl": ./start.sh, curl /health, a research."""
    with open(host.log, "ab") as log:
        proc = subprocess.Popen([str(host.clone / "start.sh")], cwd=host.clone, env=host.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SETUP_SECONDS
        while host.health().get("status") != "healthy":
            assert proc.poll() is None, f"start.sh exited with {proc.returncode}: {host.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, host.log.read_text()[-3000:]
            time.sleep(0.5)
        assert (host.clone / "venv" / "bin" / "gunicorn").exists() and (host.clone / "data").is_dir()
        report = json.loads(host.curl(
            "/tools/orchestrate_research", "-H", "Content-Type: application/json",
            "-d", '{"query": "How do I deploy the orchestrator behind Caddy?", "num_agents": 4, "wait": true}'))
        assert report["status"] == "completed", report
        assert "[S1]" in report["final_synthesis"] and report["sources"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


def test_readme_service_manager_deploy_and_bench_work_from_nothing(host):
    host.wipe()
    readme_run(host)

    host.wipe()
    manager = ("python3", host.clone / "service_manager.py")  # as the README runs it
    started = host.run(*manager, "start", "mcp-orchestrator")
    assert started.returncode == 0, host.log.read_text()[-3000:]
    assert host.run(*manager, "status", "mcp-orchestrator").returncode == 0
    assert host.health()["status"] == "healthy"
    assert host.run(*manager, "stop", "mcp-orchestrator").returncode == 0
    assert host.run(*manager, "status", "mcp-orchestrator").returncode == 1

    host.wipe()
    deployed = host.run(host.clone / "deploy.sh", env={**host.env, "DEPLOY_ROOT": str(host.deploy_root)})
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    head = subprocess.run(["git", "-C", str(host.clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert json.loads(host.curl("/"))["release"] == head
    assert host.health()["status"] == "healthy"
    host.stop_managed()

    host.wipe()
    bench = host.run(host.clone / "bench" / "run.sh", "--quick", "--only", "store")
    assert bench.returncode == 0, (bench.stdout + bench.stderr)[-3000:]
    results = json.loads((host.clone / "bench" / "results" / "latest.json").read_text())
    assert results["store_events_per_s_sqlite"]["value"] > 0
    assert results["store_events_per_s_redis"]["value"] > 0
