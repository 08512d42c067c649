"""Source tools, fetch_url and plug-ins through the app: `<source>_search` over REST and MCP
against local fakes, disabled sources reported, plug-ins loaded or skipped and reported."""

from __future__ import annotations

import dataclasses

import pytest

from app import create_app
from tests.fakes.sources import FakeSources
from tests.mcp.test_mcp_http import initialize, rpc

SOURCES = ["local", "web", "wikipedia", "arxiv", "semantic_scholar", "github", "hackernews"]


@pytest.fixture
def fakes():
    servers = FakeSources().start()
    yield servers
    servers.stop()


@pytest.fixture
def wired(settings, fakes):
    s = fakes.servers
    app = create_app(dataclasses.replace(
        settings, wikipedia_api_url=s["wikipedia"].url, arxiv_api_url=s["arxiv"].url, searxng_url=s["searxng"].url,
        github_api_url=s["github"].url, hn_api_url=s["hackernews"].url,
        semantic_scholar_api_url=s["semantic_scholar"].url,
        tool_modules=("tests.plugins.echo_tools", "tests.plugins.broken_tools", "tests.plugins.no_such_module")))
    yield app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()


@pytest.mark.parametrize("name, expected_url", [
    ("wikipedia", "https://en.wikipedia.org/wiki/Reciprocal_rank_fusion"),
    ("arxiv", "https://arxiv.org/abs/2101.00001"),
    ("web", "https://www.example.org/blog/rank-fusion/?utm_source=newsletter"),
    ("github", "https://github.com/acme/rank-fusion"),
    ("hackernews", "https://github.com/acme/rank-fusion"),
    ("semantic_scholar", "https://arxiv.org/abs/2101.00001"),
])
def test_every_source_tool_answers_over_rest_and_mcp(wired, name, expected_url):
    rest = wired.post(f"/tools/{name}_search", json={"query": "rank fusion", "limit": 2})
    assert rest.status_code == 200, rest.get_json()
    assert rest.get_json()["results"][0]["url"] == expected_url
    session = initialize(wired).headers["Mcp-Session-Id"]
    call = rpc(wired, "tools/call", {"name": f"{name}_search", "arguments": {"query": "rank fusion"}},
               session=session).get_json()["result"]
    assert not call["isError"] and call["structuredContent"]["results"][0]["url"] == expected_url


def test_sources_and_their_state_are_listed_in_tools_patterns_and_health(wired, client):
    names = {t["name"] for t in wired.get("/tools").get_json()["tools"]}
    assert {f"{s}_search" for s in SOURCES} | {"fetch_url"} <= names
    patterns = client.post("/tools/list_orchestrator_patterns", json={}).get_json()
    listed = {s["name"]: s for s in patterns["sources"]}
    assert set(listed) == set(SOURCES)
    assert listed["wikipedia"]["enabled"] is False and "WIKIPEDIA_API_URL" in listed["wikipedia"]["disabled_reason"]
    assert patterns["patterns"][1]["legacy_agent_types"]["image"] == "web"
    checks = client.get("/health").get_json()["checks"]["sources"]
    assert checks["web"]["status"] == "disabled" and "SEARXNG_URL" in checks["web"]["disabled_reason"]
    assert wired.get("/health").get_json()["checks"]["sources"]["arxiv"]["status"] == "ok"
    refused = client.post("/tools/github_search", json={"query": "x"})
    assert refused.status_code == 503 and "GITHUB_API_URL" in refused.get_json()["message"]


def test_a_failing_source_api_is_a_502_not_a_500(wired, fakes):
    fakes["hackernews"].state.fail_status = 500
    response = wired.post("/tools/hackernews_search", json={"query": "flaky"})
    assert response.status_code == 502 and response.get_json()["error"] == "source_error"


def test_plugins_load_and_broken_ones_are_skipped_and_reported(wired):
    assert wired.post("/tools/plugin_echo", json={"text": "hi"}).get_json() == {"echo": "hi"}
    names = {t["name"] for t in wired.get("/tools").get_json()["tools"]}
    assert "plugin_echo" in names and "half_registered" not in names
    health = wired.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "degraded"
    plugins = {p["name"]: p for p in health.get_json()["checks"]["plugins"]["loaded"]}
    assert plugins["tests.plugins.echo_tools"] == {"name": "tests.plugins.echo_tools", "kind": "module",
                                                   "status": "ok", "tools": ["plugin_echo"]}
    assert "broken on purpose" in plugins["tests.plugins.broken_tools"]["error"]
    assert "ModuleNotFoundError" in plugins["tests.plugins.no_such_module"]["error"]


def test_fetch_url_refuses_loopback_and_names_the_field(client):
    response = client.post("/tools/fetch_url", json={"url": "http://127.1:9/secret"})
    assert response.status_code == 400 and "url" in response.get_json()["details"]["fields"]
    session = initialize(client).headers["Mcp-Session-Id"]
    call = rpc(client, "tools/call", {"name": "fetch_url", "arguments": {"url": "http://localhost:9/"}},
               session=session).get_json()["result"]
    assert call["isError"] and "non-public" in call["content"][0]["text"]


def test_entry_point_plugins_are_loaded(monkeypatch, settings):
    from importlib.metadata import EntryPoint

    from mcp import plugins
    from mcp.tools import ToolRegistry

    found = [EntryPoint("echo", "tests.plugins.echo_tools:register_tools", plugins.ENTRY_POINT_GROUP),
             EntryPoint("gone", "tests.plugins.missing:register_tools", plugins.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(plugins, "entry_points", lambda group: found if group == plugins.ENTRY_POINT_GROUP else [])
    registry = ToolRegistry()
    reports = plugins.load_plugins(registry, settings)
    assert [(r["kind"], r["status"]) for r in reports] == [("entry_point", "ok"), ("entry_point", "error")]
    assert registry.get("plugin_echo").name == "plugin_echo"


@pytest.mark.parametrize("body", [b"[]", b'{"query": {"pages": "none"}}', b'{"query": {"pages": [null, 5]}}',
                                  b"[" * 10_000, b'{"query": {"pages": [{"title": "lone \\ud800"}]}}'])
def test_a_search_api_answer_of_the_wrong_shape_is_502_not_500(wired, fakes, body):
    """Found by issue 23's fuzz: the source's parsing failed on JSON of another shape and
    the tool answered 500."""
    fakes.servers["wikipedia"].respond = lambda request: (200, "application/json", body)
    rest = wired.post("/tools/wikipedia_search", json={"query": f"shape {len(body)} {body[:12]!r}"})
    assert rest.status_code == 502, rest.get_data(as_text=True)
    assert rest.get_json()["error"] == "source_error" and rest.get_json()["details"]["source"] == "wikipedia"
