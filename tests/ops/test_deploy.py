"""deploy.sh from an empty DEPLOY_ROOT: it builds its own venv with a real pip install (a
deploy killed during that install leaves a venv it rebuilds), a good ref serves, a broken ref
rolls back by itself, data survives both."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

# a real first install of the release's venv, under a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def deployment(tmp_path, offline_pip):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    git(repo, "config", "user.email", "deploy@test.local")
    git(repo, "config", "user.name", "deploy test")
    root = tmp_path / "deploy-root"
    env = {**os.environ, **offline_pip, "DEPLOY_ROOT": str(root), "PORT": str(free_port()),
           "DEPLOY_HEALTH_TIMEOUT": "40", "SERVICE_MANAGER_HOME": str(tmp_path / "sm"), "WORKERS": "2",
           "GRACEFUL_TIMEOUT": "5", "LOG_FORMAT": "text"}
    for inherited in ("DATA_DIR", "VENV_DIR", "SKIP_PIP_INSTALL"):
        env.pop(inherited, None)
    yield repo, root, env
    if (root / "current").exists():
        subprocess.run([sys.executable, str(root / "current" / "service_manager.py"), "stop", "mcp-orchestrator"],
                       env=env, capture_output=True, timeout=60)


def kill_during_venv_install(repo: Path, root: Path, env: dict[str, str]) -> None:
    """Start a deploy and kill it (SIGKILL, with its pip) while it installs the venv."""
    proc = subprocess.Popen([str(repo / "deploy.sh")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(root.glob("venvs/*/bin/pip")):
        assert proc.poll() is None and time.monotonic() < deadline, "the deploy never started its venv"
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    # the deploy lock is free only once every killed process has exited, pip's children
    # too; on a busy machine that is after deploy.sh itself is gone
    deadline = time.monotonic() + 30
    with open(root / ".deploy.lock", "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "a killed deploy still holds its lock"
                time.sleep(0.05)
        fcntl.flock(lock, fcntl.LOCK_UN)


def deploy(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "deploy.sh"), *args], env=env, capture_output=True, text=True, timeout=600)


def test_deploy_serves_good_refs_and_rolls_back_a_broken_one(deployment):
    repo, root, env = deployment
    url = f"http://127.0.0.1:{env['PORT']}"
    first = git(repo, "rev-parse", "HEAD")
    kill_during_venv_install(repo, root, env)
    [venv] = (root / "venvs").iterdir()
    assert not (venv / ".complete").exists()
    done = deploy(repo, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"removing the incomplete venv {venv}" in done.stderr
    assert (venv / ".complete").exists() and (root / "current" / "venv").resolve() == venv
    assert requests.get(f"{url}/", timeout=5).json()["release"] == first
    task = requests.post(f"{url}/tools/orchestrate_search", json={"query": "deploy and rollback", "wait": True},
                         timeout=60).json()

    (repo / "docs" / "release-notes.md").write_text("# Release notes\n\nA second release.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "second release")
    second = git(repo, "rev-parse", "HEAD")
    routine = deploy(repo, env)
    assert routine.returncode == 0, routine.stderr[-3000:]
    assert "creating venv" not in routine.stderr, "a release with the same requirements reuses the venv"
    assert requests.get(f"{url}/", timeout=5).json()["release"] == second

    (repo / "app.py").write_text("raise RuntimeError('this release cannot import')\n")
    git(repo, "commit", "-qam", "broken release")
    broken = deploy(repo, env)
    assert broken.returncode == 1
    assert "switching back" in broken.stderr
    assert requests.get(f"{url}/", timeout=5).json()["release"] == second
    assert requests.get(f"{url}/tasks/{task['task_id']}", timeout=5).json()["status"] == "completed"
    assert (root / "data" / "orchestrator.db").exists()

    status = deploy(repo, env, "--status").stdout
    assert f"current  {second}" in status and f"previous {first}" in status
    assert deploy(repo, env, "--rollback").returncode == 0
    assert requests.get(f"{url}/", timeout=5).json()["release"] == first
    assert requests.get(f"{url}/tasks/{task['task_id']}/result", timeout=5).json()["status"] == "completed"
    assert json.loads(requests.get(f"{url}/health", timeout=5).text)["status"] == "healthy"
