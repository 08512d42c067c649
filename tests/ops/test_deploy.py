"""deploy.sh: a good ref serves, a broken ref rolls back by itself, data survives both."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def deployment(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    git(repo, "config", "user.email", "deploy@test.local")
    git(repo, "config", "user.name", "deploy test")
    root = tmp_path / "deploy-root"
    # Seed the shared venv cache with the test venv, as a host with these requirements would have it.
    digest = hashlib.sha256((repo / "requirements.txt").read_bytes()).hexdigest()[:16]
    (root / "venvs").mkdir(parents=True)
    (root / "venvs" / digest).symlink_to(sys.prefix)
    env = {**os.environ, "DEPLOY_ROOT": str(root), "PORT": str(free_port()), "DEPLOY_HEALTH_TIMEOUT": "40",
           "SERVICE_MANAGER_HOME": str(tmp_path / "sm"), "WORKERS": "2", "GRACEFUL_TIMEOUT": "5",
           "LOG_FORMAT": "text"}
    env.pop("DATA_DIR", None)
    yield repo, root, env
    subprocess.run([sys.executable, str(root / "current" / "service_manager.py"), "stop", "mcp-orchestrator"],
                   env=env, capture_output=True, timeout=60)


def deploy(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / "deploy.sh"), *args], env=env, capture_output=True, text=True, timeout=180)


def test_deploy_serves_good_refs_and_rolls_back_a_broken_one(deployment):
    repo, root, env = deployment
    url = f"http://127.0.0.1:{env['PORT']}"
    first = git(repo, "rev-parse", "HEAD")
    done = deploy(repo, env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert requests.get(f"{url}/", timeout=5).json()["release"] == first
    task = requests.post(f"{url}/tools/orchestrate_search", json={"query": "deploy and rollback", "wait": True},
                         timeout=60).json()

    (repo / "docs" / "release-notes.md").write_text("# Release notes\n\nA second release.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "second release")
    second = git(repo, "rev-parse", "HEAD")
    assert deploy(repo, env).returncode == 0
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
