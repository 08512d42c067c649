"""Behind a real Caddy (deploy/Caddyfile, Caddy's internal TLS) every request reaches the
service from loopback; it is still not local. Without keys the service refuses it; with
keys /metrics through the proxy needs one."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import requests

from tests.test_caddy import API_KEYS, KEY, MCP_HEADERS, caddy_factory  # noqa: F401 - the fixture

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is installed by ./test.sh")]
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}


def through(caddy, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{caddy.url}/mcp{path}", verify=caddy.verify, timeout=30, **kwargs)


def test_without_keys_the_proxy_gets_401_and_a_local_client_is_served(service_factory, caddy_factory):
    service = service_factory({"WORKERS": "2"})
    caddy = caddy_factory("Caddyfile", tls=True, UPSTREAM=f"127.0.0.1:{service.port}")

    direct = service.post("/tools/orchestrate_search", json={"query": "sqlite store"})
    assert direct.status_code == 202
    task_id = direct.json()["task_id"]
    assert service.get("/tasks").status_code == 200 and service.get("/metrics").status_code == 200
    local_curl = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"http://localhost:{service.port}/tasks"],
                                capture_output=True, text=True, timeout=30)
    assert local_curl.stdout.endswith("\n200") and task_id in local_curl.stdout

    refused = [through(caddy, "POST", "/tools/orchestrate_search", json={"query": "sqlite store"}),
               through(caddy, "GET", "/tasks"), through(caddy, "GET", f"/tasks/{task_id}"),
               through(caddy, "GET", f"/stream/{task_id}"), through(caddy, "GET", "/metrics"),
               requests.post(f"{caddy.url}/mcp", json=INITIALIZE, headers=MCP_HEADERS, verify=caddy.verify,
                             timeout=30)]
    for response in refused:
        assert response.status_code == 401, (response.request.url, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "no API keys" in response.json()["message"]
    assert through(caddy, "GET", "/health").status_code == 200
    assert through(caddy, "GET", "/").status_code == 200
    # what went through the proxy started nothing
    assert [t["task_id"] for t in service.get("/tasks").json()["tasks"]] == [task_id]


@pytest.mark.parametrize("trusted_proxies", ["0", "1"])
def test_metrics_through_the_proxy_need_a_key(service_factory, caddy_factory, trusted_proxies):
    service = service_factory({"WORKERS": "2", "API_KEYS": API_KEYS, "TRUSTED_PROXIES": trusted_proxies,
                               "LOG_FORMAT": "json"})
    caddy = caddy_factory("Caddyfile", tls=True, UPSTREAM=f"127.0.0.1:{service.port}")

    assert through(caddy, "GET", "/metrics").status_code == 401
    assert through(caddy, "GET", "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 401
    assert through(caddy, "GET", "/metrics", headers=KEY).status_code == 200
    assert service.get("/metrics").status_code == 200
    # a forged loopback address sent straight to the service does not make it local either
    assert service.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 401

    if trusted_proxies == "1":
        # the client's own X-Forwarded-For is not believed: the address the logs (and the rate
        # limiter) use is the one Caddy reports, the address it saw the client connect from
        assert through(caddy, "GET", "/metrics", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 401
        refusals = [json.loads(line) for line in service.log_path.read_text().splitlines()
                    if line.startswith("{") and "without a valid API key" in line]
        assert refusals and {r["client"] for r in refusals} == {"127.0.0.1"}
