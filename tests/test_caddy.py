"""Through a real Caddy with the shipped Caddyfiles: the /mcp prefix, unbuffered SSE, public
URLs under /mcp/, and two instances sharing Redis behind one load balancer serving one MCP
session whose requests alternate between them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.test_service import QUERY

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is installed by ./test.sh")]
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
# Behind a proxy the service needs keys: without them it serves local clients only.
API_KEYS = "tester:caddy-secret"
KEY = {"X-API-Key": "caddy-secret"}


class Caddy:
    """A real Caddy on a free port; with `tls`, on https://127.0.0.1 with Caddy's internal CA
    (pass `verify=caddy.verify` to requests: that CA's root certificate)."""

    def __init__(self, config: Path, env: dict[str, str], log: Path, tls: bool = False):
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        site = f"https://127.0.0.1:{self.port}" if tls else f":{self.port}"
        self.verify: str | bool = str(log.parent / "caddy/pki/authorities/local/root.crt") if tls else True
        env = {**os.environ, "SITE_ADDRESS": site, "CADDY_ADMIN": f"127.0.0.1:{free_port()}",
               "CADDY_HTTP_PORT": str(free_port()),
               "HOME": str(log.parent), "XDG_DATA_HOME": str(log.parent), "XDG_CONFIG_HOME": str(log.parent), **env}
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(["caddy", "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{self.url}/mcp/health/live", timeout=1, verify=self.verify).status_code == 200:
                    return
            except OSError:  # not up yet (a RequestException), or its CA not yet written
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def caddy_factory(tmp_path):
    started: list[Caddy] = []

    def make(config: str, tls: bool = False, **env: str) -> Caddy:
        caddy = Caddy(ROOT / "deploy" / config, env, tmp_path / f"caddy{len(started)}.log", tls)
        started.append(caddy)
        return caddy

    yield make
    for caddy in started:
        caddy.stop()


def test_the_service_through_caddy(service_factory, caddy_factory, fake_llm):
    fake_llm.state.latency = 0.5
    fake_llm.state.max_concurrency = 2
    service = service_factory({"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                               "OPENAI_API_KEY": "sk-test", "TRUSTED_PROXIES": "1", "API_KEYS": API_KEYS})
    caddy = caddy_factory("Caddyfile", UPSTREAM=f"127.0.0.1:{service.port}")
    health = requests.get(f"{caddy.url}/mcp/health", timeout=10)
    assert health.status_code == 200 and health.json()["service"] == "mcp-orchestrator"

    handle = requests.post(f"{caddy.url}/mcp/tools/orchestrate_research", json={"query": QUERY, "num_agents": 6},
                           headers=KEY, timeout=10).json()
    assert handle["stream_url"] == f"/mcp/stream/{handle['task_id']}"
    assert handle["result_url"].startswith("/mcp/tasks/")
    started = time.monotonic()
    stream = requests.get(f"{caddy.url}{handle['stream_url']}", headers=KEY, stream=True, timeout=60)
    first_event_at = None
    for line in stream.iter_lines(decode_unicode=True):
        if line.startswith("id: ") and first_event_at is None:
            first_event_at = time.monotonic() - started
        if line == "event: workflow_complete":
            break
    finished_at = time.monotonic() - started
    # no proxy buffering: the first event arrives long before the task finishes (the task
    # takes seconds: six agents two at a time, 0.5 s a call)
    assert first_event_at is not None and first_event_at < finished_at - 1.0

    initialize = requests.post(f"{caddy.url}/mcp", headers={**MCP_HEADERS, **KEY}, timeout=10, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    assert initialize.status_code == 200 and initialize.headers["Mcp-Session-Id"]


def test_two_instances_behind_one_caddy_serve_one_mcp_session(service_factory, caddy_factory, redis_server,
                                                               tmp_path):
    subprocess.run(["redis-cli", "-u", f"{redis_server}/15", "flushdb"], check=True, capture_output=True)
    env = {"STORE_URL": f"{redis_server}/15", "WORKERS": "2", "RATE_LIMIT_ORCHESTRATE": "100 per minute",
           "API_KEYS": API_KEYS}
    a, b = service_factory(env, tmp_path / "a"), service_factory(env, tmp_path / "b")
    caddy = caddy_factory("Caddyfile.scaleout", UPSTREAMS=f"127.0.0.1:{a.port} 127.0.0.1:{b.port}")
    session = requests.Session()
    session.headers.update(KEY)
    init = session.post(f"{caddy.url}/mcp", headers=MCP_HEADERS, timeout=10, json={
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    headers = {**MCP_HEADERS, "Mcp-Session-Id": init.headers["Mcp-Session-Id"], "MCP-Protocol-Version": "2025-11-25"}
    for n in range(2, 10):
        call = session.post(f"{caddy.url}/mcp", headers=headers, timeout=60, json={
            "jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "orchestrate_search", "arguments": {"query": f"scale out {n}", "num_agents": 1}}})
        assert call.status_code == 200
        assert call.json()["result"]["structuredContent"]["status"] == "completed"
    served = []
    for instance in (a, b):
        metrics = instance.get("/metrics").text
        served.append(sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                          if line.startswith("flask_http_request_duration_seconds_count")
                          and 'endpoint="mcp_http.post"' in line))
    assert all(count >= 3 for count in served), served


def test_oauth_discovery_and_the_sdk_flow_through_caddy_over_two_hosts(service_factory, caddy_factory,
                                                                        redis_server, tmp_path):
    """Behind the /mcp prefix the resource, the issuer and every endpoint are public URLs under
    https://<host>/mcp, the well-known documents are found where RFC 8414/9728 put them, and
    the SDK's flow succeeds while Caddy alternates its requests between two instances that
    share only Redis (registration, consent, code, tokens all live in the store)."""
    # imported here: without the SDK venv that module skips, and only this test needs it
    from tests.clients.test_sdk_clients import SDK_PYTHON
    from tests.clients.test_sdk_oauth import SCRIPT

    subprocess.run(["redis-cli", "-u", f"{redis_server}/14", "flushdb"], check=True, capture_output=True)
    env = {"STORE_URL": f"{redis_server}/14", "WORKERS": "2", "TRUSTED_PROXIES": "1", "API_KEYS": API_KEYS,
           "OAUTH_BUILTIN": "1"}
    a, b = service_factory(env, tmp_path / "a"), service_factory(env, tmp_path / "b")
    caddy = caddy_factory("Caddyfile.scaleout", UPSTREAMS=f"127.0.0.1:{a.port} 127.0.0.1:{b.port}")
    public = f"{caddy.url}/mcp"
    resource = requests.get(f"{caddy.url}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
    assert resource["resource"] == public and resource["authorization_servers"] == [public]
    server = requests.get(f"{caddy.url}/.well-known/oauth-authorization-server/mcp", timeout=10).json()
    assert server["issuer"] == public and server["token_endpoint"] == f"{public}/oauth/token"
    refused = requests.post(public, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=MCP_HEADERS, timeout=10)
    assert refused.status_code == 401
    assert f'resource_metadata="{public}/.well-known/oauth-protected-resource"' in refused.headers["WWW-Authenticate"]
    done = subprocess.run([SDK_PYTHON, str(SCRIPT), public, "--api-key", "caddy-secret"], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["search_status"] == "completed" and seen["consent_pages"] == 1 and seen["tokens_issued"] == 1
    served = []
    for instance in (a, b):
        metrics = instance.get("/metrics").text
        served.append({line.split('endpoint="', 1)[1].split('"', 1)[0] for line in metrics.splitlines()
                       if line.startswith("flask_http_request_duration_seconds_count") and 'endpoint="oauth_' in line})
    # both hosts took part in the authorization steps
    assert all(served) and len(served[0] | served[1]) >= 4, served
