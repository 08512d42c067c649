"""Rate limits are counted in the store, so every worker shares one count."""

from __future__ import annotations

import dataclasses

import pytest

from app import create_app


@pytest.fixture
def limited(settings):
    """Two apps on one store: two workers, as far as the limits can tell."""
    config = dataclasses.replace(settings, rate_limit_orchestrate="3 per minute", rate_limit_default="8 per minute",
                                 max_concurrent_tasks=0)
    apps = [create_app(config), create_app(config)]
    yield [a.test_client() for a in apps]
    for a in apps:
        a.extensions["mcp_orchestrator"].runtime.stop()


def test_orchestrate_limit_is_shared_across_workers(limited):
    a, b = limited
    codes = [c.post("/tools/orchestrate_search", json={"query": f"query {i}"}).status_code
             for i, c in enumerate((a, b, a, b))]
    assert codes == [202, 202, 202, 429]
    refused = b.post("/tools/dream_orchestrate_search", json={"query": "alias counts too"})
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert a.post("/tools/list_orchestrator_patterns", json={}).status_code == 200


def test_default_limit_applies_everywhere_but_health(limited):
    a, b = limited
    codes = [c.get("/tasks").status_code for c in (a, b) * 5]
    assert codes.count(200) == 8 and codes[-1] == 429
    assert all(a.get("/health").status_code == 200 for _ in range(10))


def test_the_same_orchestrate_limit_applies_over_mcp(limited):
    a, b = limited
    headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def call(client, n):
        body = {"jsonrpc": "2.0", "id": n, "method": "tools/call",
                "params": {"name": "orchestrate_search", "arguments": {"query": f"mcp query {n}"}, "task": {}}}
        return client.post("/mcp", json=body, headers=headers)

    assert a.post("/tools/orchestrate_search", json={"query": "rest counts too"}).status_code == 202
    codes = [call(c, n).status_code for n, c in enumerate((b, a, b))]
    assert codes == [200, 200, 429]
    assert call(a, 9).headers["Retry-After"]


def test_only_refusals_carry_retry_after(limited):
    a, _ = limited
    ordinary = [a.get("/tasks"), a.post("/tools/list_orchestrator_patterns", json={}), a.get("/tasks/search_0")]
    assert [r.status_code for r in ordinary] == [200, 200, 404]
    for response in ordinary:
        assert "Retry-After" not in response.headers, response.status_code
        assert response.headers["X-RateLimit-Remaining"]
        assert not any(name.lower().startswith("x-limiter") for name in response.headers.keys())
    while (refused := a.get("/tasks")).status_code != 429:
        pass
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
