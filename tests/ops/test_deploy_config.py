"""A deployed release has no .env of its own (git archive): deploy.sh, start.sh and the
service manager read the one configuration at DEPLOY_ROOT/.env."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.ops.conftest import seed_release_venv

pytestmark = pytest.mark.slow


def test_a_port_set_only_in_deploy_root_env_is_used_by_the_deploy_and_the_manager(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    root = tmp_path / "deploy-root"
    seed_release_venv(root, repo)  # no pip in this test
    port = free_port()
    (root / ".env").write_text(f'PORT="{port}"  # only here\nWORKERS = 2\nGRACEFUL_TIMEOUT=5\nLOG_FORMAT=text\n')
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "WORKERS", "DATA_DIR", "NOTIFY_SOCKET")}
    env.update(DEPLOY_ROOT=str(root), DEPLOY_HEALTH_TIMEOUT="60", SERVICE_MANAGER_HOME=str(tmp_path / "sm"))
    manager = [sys.executable, str(root / "current" / "service_manager.py")]
    try:
        done = subprocess.run([str(repo / "deploy.sh")], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()["release"] == sha
        assert (root / "current" / ".env").resolve() == (root / ".env")
        status = subprocess.run([*manager, "status", "mcp-orchestrator"], env=env, capture_output=True, text=True,
                                timeout=30)
        assert status.returncode == 0 and f"port {port}" in status.stdout, status.stdout
    finally:
        subprocess.run([*manager, "stop", "mcp-orchestrator"], env=env, capture_output=True, timeout=60)
