"""REST behaviour in process: validation names the field, every error is the JSON envelope
with the documented status, never a 500 or an HTML page."""

from __future__ import annotations

import dataclasses

import pytest

from app import create_app


def assert_error(response, status, code=None, field=None):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "message", "details"}
    if code:
        assert body["error"] == code
    if field:
        assert field in body["details"]["fields"], body
    return body


@pytest.mark.parametrize("args, field", [
    ({"query": "valid query", "num_agents": "eight"}, "num_agents"),
    ({"query": "valid query", "num_agents": 0}, "num_agents"),
    ({"query": "valid query", "num_agents": 21}, "num_agents"),
    ({"query": "valid query", "timeout": 5}, "timeout"),
    ({"query": "valid query", "drummer_group_size": 1}, "drummer_group_size"),
    ({"query": "valid query", "bogus": 1}, "bogus"),
    ({"query": "no"}, "query"),
    ({"num_agents": 3}, "query"),
    ({"query": "valid query", "enable_camina": "perhaps"}, "enable_camina"),
    ({"query": "valid query", "sources": "local"}, "sources"),
    ({"query": "valid query", "sources": ["nowhere"]}, "sources"),
    ({"query": "valid query", "provider": "nobody"}, "provider"),
    ({"query": "valid query", "webhook_url": "not a url"}, "webhook_url"),
    ({"query": "valid query", "depth": 4}, "depth"),
    ({"query": "valid query", "depth": 0}, "depth"),
    ({"query": "valid query", "max_steps": 13}, "max_steps"),
    ({"query": "valid query", "max_steps": "four"}, "max_steps"),
    ({"query": "valid query", "max_agents_total": 61}, "max_agents_total"),
])
def test_research_input_is_validated_naming_the_field(client, args, field):
    assert_error(client.post("/tools/orchestrate_research", json=args), 400, "validation_error", field)


@pytest.mark.parametrize("args, field", [
    ({"query": "valid query", "num_agents": 11}, "num_agents"),
    ({"query": "valid query", "agent_types": ["web", "telepathy"]}, "agent_types"),
    ({"query": "valid query", "max_results": 101}, "max_results"),
    ({"query": "valid query", "depth": 3}, "depth"),
])
def test_search_input_is_validated_naming_the_field(client, args, field):
    assert_error(client.post("/tools/orchestrate_search", json=args), 400, "validation_error", field)


def test_malformed_and_non_object_bodies(client):
    assert_error(client.post("/tools/orchestrate_research", data="{oops", content_type="application/json"), 400)
    assert_error(client.post("/tools/orchestrate_research", json=[1, 2]), 400)
    assert_error(client.post("/tools/orchestrate_research", data="query=x",
                             content_type="application/x-www-form-urlencoded"), 415)


def test_unknown_things_are_404(client):
    assert_error(client.post("/tools/no_such_tool", json={}), 404, "not_found")
    for path in ("/tasks/research_0", "/tasks/research_0/result", "/tasks/research_0/events", "/stream/research_0",
                 "/nowhere", "/.well-known/oauth-authorization-server"):
        assert_error(client.get(path), 404)
    assert_error(client.post("/tasks/research_0/cancel"), 404)


def test_wrong_method_is_405_with_allow(client):
    body = client.get("/tools/orchestrate_research")
    assert_error(body, 405)
    assert "POST" in body.headers["Allow"]
    assert_error(client.delete("/tasks"), 405)


@pytest.mark.parametrize("query, field", [
    ("status=bogus", "status"), ("limit=0", "limit"), ("cursor=%%%", "cursor"), ("colour=red", "colour"),
])
def test_list_filters_are_validated(client, query, field):
    assert_error(client.get(f"/tasks?{query}"), 400, field=field)


def test_oversized_body_is_413(client):
    assert_error(client.post("/tools/orchestrate_research", data="x" * (1024 * 1024 + 10),
                             content_type="application/json"), 413, "payload_too_large")


def test_task_alias_and_legacy_agent_types_are_accepted(client):
    research = client.post("/tools/orchestrate_research", json={"task": "sqlite store", "num_agents": 2})
    assert research.status_code == 202, research.get_json()
    search = client.post("/tools/orchestrate_search", json={"query": "sqlite store", "agent_types": ["text", "video"],
                                                            "wait": True})
    assert search.status_code == 200
    assert {a["agent_type"] for a in search.get_json()["agent_results"]} == {"web"}


@pytest.fixture
def idle_client(settings):
    """An app whose workers take no tasks, so tasks stay pending."""
    app = create_app(dataclasses.replace(settings, max_concurrent_tasks=0))
    yield app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()


def test_result_is_409_while_pending_and_cancel_ends_a_pending_task(idle_client):
    handle = idle_client.post("/tools/orchestrate_research", json={"query": "pending work"}).get_json()
    body = assert_error(idle_client.get(handle["result_url"]), 409, "conflict")
    assert body["details"]["status"] == "pending"
    assert idle_client.post(f"/tasks/{handle['task_id']}/cancel").status_code == 202
    result = idle_client.get(handle["result_url"]).get_json()
    assert result["status"] == "cancelled" and result["partial"] is True
    events = idle_client.get(handle["events_url"]).get_json()["events"]
    assert [e["event_type"] for e in events] == ["workflow_cancelled"]
    assert_error(idle_client.post(f"/tasks/{handle['task_id']}/cancel"), 409)


def test_bad_stream_resume_point_and_events_cursor(idle_client):
    handle = idle_client.post("/tools/orchestrate_research", json={"query": "pending work"}).get_json()
    assert_error(idle_client.get(handle["stream_url"], headers={"Last-Event-ID": "abc"}), 400)
    assert_error(idle_client.get(f"{handle['events_url']}?after=-1"), 400, field="after")


def test_listing_pages_through_tasks(idle_client):
    ids = [idle_client.post("/tools/orchestrate_search", json={"query": f"query {i}"}).get_json()["task_id"]
           for i in range(3)]
    first = idle_client.get("/tasks?limit=2").get_json()
    second = idle_client.get(f"/tasks?limit=2&cursor={first['next_cursor']}").get_json()
    assert [t["task_id"] for t in first["tasks"] + second["tasks"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert idle_client.get("/tasks?orchestrator=research").get_json()["tasks"] == []


def test_service_info_health_and_tools(client):
    info = client.get("/").get_json()
    assert info["name"] == "mcp-orchestrator" and info["release"]
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "healthy" and body["service"] == "mcp-orchestrator"
    assert {"store", "runtime", "sources", "provider"} <= set(body["checks"])
    tools = {t["name"]: t for t in client.get("/tools").get_json()["tools"]}
    assert {"orchestrate_research", "orchestrate_search", "get_orchestration_status", "get_orchestration_result",
            "cancel_orchestration", "list_orchestrations", "list_orchestrator_patterns", "local_search"} <= set(tools)
    schema = tools["orchestrate_research"]["inputSchema"]
    assert schema["properties"]["num_agents"] == {"type": "integer", "default": 8, "minimum": 1, "maximum": 20}
    for name, (default, low, high) in {"depth": (2, 1, 3), "max_steps": (4, 1, 12)}.items():
        assert {k: schema["properties"][name][k] for k in ("type", "default", "minimum", "maximum")} == {
            "type": "integer", "default": default, "minimum": low, "maximum": high}
    assert schema["properties"]["max_agents_total"]["maximum"] == 60
    assert tools["orchestrate_search"]["inputSchema"]["properties"]["depth"]["maximum"] == 2
    assert schema["additionalProperties"] is False and schema["required"] == ["query"]
    assert "dream_orchestrate_research" not in tools


def test_tool_schemas_are_portable_and_keep_their_bounds(client):
    """Every `type` is one name (issue #14 item 9: clients with a single-type dialect, the
    MCP Inspector's portability check); optional fields keep their bounds, and null is
    still accepted where it means "not given"."""
    def types(node):
        if isinstance(node, dict):
            if "type" in node:
                yield node["type"]
            for value in node.values():
                yield from types(value)
        elif isinstance(node, list):
            for value in node:
                yield from types(value)

    tools = client.get("/tools").get_json()["tools"]
    assert all(isinstance(kind, str) and kind != "null" for tool in tools for kind in types(tool["inputSchema"]))
    props = {t["name"]: t["inputSchema"]["properties"] for t in tools}
    assert props["orchestrate_research"]["max_cost_usd"] == {"type": "number", "minimum": 0, "maximum": 10000}
    assert props["orchestrate_search"]["provider"]["type"] == "string" and None not in props["orchestrate_search"][
        "provider"]["enum"]
    accepted = client.post("/tools/orchestrate_search", json={"query": "nulls still mean default", "title": None,
                                                                "max_tokens": None, "provider": None})
    assert accepted.status_code == 202, accepted.get_json()


def test_original_route_names_work(client):
    patterns = client.post("/tools/list_orchestrator_patterns", json={}).get_json()
    assert {p["name"] for p in patterns["patterns"]} == {"research", "search"}
    legacy = client.post("/tools/dreamwalker_patterns", json={})
    assert legacy.status_code == 200
