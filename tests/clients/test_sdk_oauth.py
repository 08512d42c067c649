"""The official MCP Python SDK's OAuthClientProvider against 4 gunicorn workers with the
built-in authorization server: discovery -> registration -> consent -> token -> tools/call
-> refresh after the access token expired. Every step is a new connection (no keep-alive),
so any of the workers may take it: clients, codes, refresh tokens and signing keys live in
the store, not in a worker."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import requests

from tests.clients.test_sdk_clients import SDK_PYTHON

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("sdk_oauth_client.py")


def test_sdk_oauth_client_provider_connects_through_the_builtin_server(service_factory):
    service = service_factory({"API_KEYS": "operator:op-secret", "OAUTH_BUILTIN": "1",
                               "OAUTH_ACCESS_TOKEN_TTL": "5s", "RATE_LIMIT_ORCHESTRATE": "100 per minute", "LOG_LEVEL": "debug"})
    done = subprocess.run([SDK_PYTHON, str(SCRIPT), f"{service.url}/mcp", "--api-key", "op-secret",
                           "--wait-for-refresh", "7"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["server"] == "mcp-orchestrator" and seen["client_registered"] and seen["consent_pages"] == 1
    assert seen["search_error"] is False and seen["search_status"] == "completed"
    # the refreshed token works and its subject still owns the task started before
    assert seen["tokens_issued"] >= 2 and seen["refresh_rotated"]
    assert seen["after_refresh_error"] is False and seen["tasks_after_refresh"] == 1
    assert seen["scope"] == "orchestrate read"
    # the operator's key sees the task the token started: the token's subject is the key's name
    tasks = requests.get(f"{service.url}/tasks", headers={"X-API-Key": "op-secret"}, timeout=10).json()["tasks"]
    assert len(tasks) == 1
    # gunicorn's debug log names the worker of each request
    log = service.log_path.read_text()
    steps = re.findall(r"\[(\d+)\] \[DEBUG\] (?:GET|POST) (/oauth/\S+|/\.well-known/\S+)", log)
    assert {path for _, path in steps} >= {"/oauth/register", "/oauth/authorize", "/oauth/token"}
    # every step was served by a worker; which worker takes each fresh connection is the
    # kernel's choice (on an idle host often the same one), so the steps landing on different
    # workers and hosts is shown through Caddy's round robin over two instances (test_caddy.py)
    assert {pid for pid, _ in steps} <= set(map(str, service.worker_pids()))
    # and no token reached the log, even at debug level
    assert "eyJ" not in log and "refresh_token" not in log
