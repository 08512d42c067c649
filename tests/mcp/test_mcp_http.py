"""MCP over Streamable HTTP, in process: lifecycle, sessions kept in the store, tools,
progress over SSE, resources, prompts, tasks, and spec-exact JSON-RPC errors."""

from __future__ import annotations

import json

import pytest

from app import create_app

JSON = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def rpc(client, method, params=None, msg_id=1, session=None, headers=None, path="/mcp"):
    body = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        body["params"] = params
    h = {**JSON, **(headers or {})}
    if session:
        h["Mcp-Session-Id"] = session
    return client.post(path, data=json.dumps(body), headers=h)


def initialize(client, version="2025-11-25", path="/mcp"):
    response = rpc(client, "initialize", {"protocolVersion": version, "capabilities": {},
                                          "clientInfo": {"name": "pytest", "version": "1"}}, path=path)
    assert response.status_code == 200
    return response


def sse_messages(response):
    return [json.loads(line[6:]) for line in response.get_data(as_text=True).splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("asked, answered", [("2024-11-05", "2024-11-05"), ("2025-03-26", "2025-03-26"),
                                             ("2025-06-18", "2025-06-18"), ("2025-11-25", "2025-11-25"),
                                             ("1999-01-01", "2025-11-25")])
def test_initialize_negotiates_the_version_and_issues_a_session(client, asked, answered):
    response = initialize(client, asked)
    result = response.get_json()["result"]
    assert result["protocolVersion"] == answered
    assert result["serverInfo"]["name"] == "mcp-orchestrator"
    assert {"tools", "resources", "prompts", "logging"} <= set(result["capabilities"])
    assert response.headers["Mcp-Session-Id"]


def test_session_lives_in_the_store_so_a_second_app_serves_it(client, settings):
    session = initialize(client).headers["Mcp-Session-Id"]
    other = create_app(settings)  # another "worker" on the same store
    try:
        response = rpc(other.test_client(), "tools/list", session=session)
        assert response.status_code == 200
        names = {t["name"] for t in response.get_json()["result"]["tools"]}
        assert "orchestrate_research" in names and "dream_orchestrate_research" not in names
    finally:
        other.extensions["mcp_orchestrator"].runtime.stop()


def test_a_deleted_or_unknown_session_is_404_on_every_worker(client, settings):
    session = initialize(client).headers["Mcp-Session-Id"]
    other = create_app(settings)  # another worker on the same store
    try:
        other_client = other.test_client()
        assert rpc(other_client, "tools/list", session=session).status_code == 200
        assert rpc(client, "logging/setLevel", {"level": "error"}, session=session).status_code == 200
        assert other.extensions["mcp_orchestrator"].store.get_session(session)["log_level"] == "error"
        assert client.delete("/mcp", headers={"Mcp-Session-Id": session}).status_code == 204
        for worker in (client, other_client):
            gone = rpc(worker, "tools/list", session=session)
            assert gone.status_code == 404 and gone.get_json()["error"]["code"] == -32600
            assert worker.delete("/mcp", headers={"Mcp-Session-Id": session}).status_code == 404
        unknown = rpc(other_client, "ping", session="never-issued-session")
        assert unknown.status_code == 404 and "Mcp-Session-Id" not in unknown.headers
    finally:
        other.extensions["mcp_orchestrator"].runtime.stop()


def test_a_call_ending_after_delete_does_not_bring_the_session_back(client, monkeypatch):
    from mcp.http import mcp_http

    session = initialize(client).headers["Mcp-Session-Id"]
    store = client.application.extensions["mcp_orchestrator"].store
    monkeypatch.setattr(mcp_http, "SESSION_REFRESH_SHARE", 0.0)  # every request would slide the expiry
    original = store.get_session

    def deleted_meanwhile(session_id):
        found = original(session_id)
        store.delete_session(session_id)  # DELETE lands while this request runs
        return found

    monkeypatch.setattr(store, "get_session", deleted_meanwhile)
    assert rpc(client, "tools/list", session=session).status_code == 200
    monkeypatch.setattr(store, "get_session", original)
    assert store.get_session(session) is None
    assert rpc(client, "tools/list", session=session).status_code == 404


def test_a_session_belongs_to_the_key_that_opened_it_from_a_workers_copy_too(settings):
    import dataclasses

    keyed = dataclasses.replace(settings, api_keys=("alice:alice-secret", "bob:bob-secret"))
    first, second = create_app(keyed), create_app(keyed)
    alice, bob = {"X-API-Key": "alice-secret"}, {"X-API-Key": "bob-secret"}
    try:
        opened = first.test_client().post("/mcp", headers={**JSON, **alice}, data=json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        session = opened.headers["Mcp-Session-Id"]
        for app in (first, second):  # the first answers from its copy, the second from the store
            assert rpc(app.test_client(), "tools/list", session=session, headers=alice).status_code == 200
            assert rpc(app.test_client(), "tools/list", session=session, headers=bob).status_code == 404
    finally:
        for app in (first, second):
            app.extensions["mcp_orchestrator"].runtime.stop()


def test_root_path_is_an_mcp_endpoint_too(client):
    assert initialize(client, path="/").get_json()["result"]["protocolVersion"] == "2025-11-25"
    assert client.get("/", headers={"Accept": "text/event-stream"}).status_code == 405


def test_tool_call_returns_structured_content_and_aliases_work(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    result = rpc(client, "tools/call", {"name": "local_search", "arguments": {"query": "gunicorn workers"}},
                 session=session).get_json()["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["source"] == "local"
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    legacy = rpc(client, "tools/call", {"name": "dreamwalker_patterns", "arguments": {}}, session=session)
    assert legacy.get_json()["result"]["isError"] is False


def test_orchestrate_over_mcp_waits_and_streams_progress(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    response = rpc(client, "tools/call", {"name": "orchestrate_research",
                                          "arguments": {"query": "How are tasks resumed after a crash?",
                                                        "num_agents": 3},
                                          "_meta": {"progressToken": "tok-1"}}, session=session, msg_id=7)
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    messages = sse_messages(response)
    progress = [m for m in messages if m.get("method") == "notifications/progress"]
    assert progress and all(m["params"]["progressToken"] == "tok-1" for m in progress)
    values = [m["params"]["progress"] for m in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    final = messages[-1]
    assert final["id"] == 7
    assert final["result"]["structuredContent"]["status"] == "completed"
    assert "[S" in final["result"]["structuredContent"]["final_synthesis"]


def test_input_errors_are_tool_errors_and_unknown_tools_are_invalid_params(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    bad = rpc(client, "tools/call", {"name": "orchestrate_research", "arguments": {"query": "ok query",
                                                                                   "num_agents": 50}},
              session=session).get_json()["result"]
    assert bad["isError"] is True and "num_agents" in bad["structuredContent"]["fields"]
    unknown = rpc(client, "tools/call", {"name": "nope", "arguments": {}}, session=session).get_json()
    assert unknown["error"]["code"] == -32602


def test_task_augmented_call_returns_a_task_handle_and_tasks_methods_follow_it(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    result = rpc(client, "tools/call", {"name": "orchestrate_search", "arguments": {"query": "sqlite store"},
                                        "task": {"ttl": 60000}}, session=session).get_json()["result"]
    task_id = result["task"]["taskId"]
    assert result["task"]["status"] in ("working", "completed")
    final = rpc(client, "tasks/result", {"taskId": task_id}, session=session).get_json()["result"]
    assert final["structuredContent"]["status"] == "completed"
    assert rpc(client, "tasks/get", {"taskId": task_id}, session=session).get_json()["result"]["status"] == "completed"
    listed = rpc(client, "tasks/list", {}, session=session).get_json()["result"]["tasks"]
    assert task_id in [t["taskId"] for t in listed]
    missing = rpc(client, "tasks/get", {"taskId": "search_nope"}, session=session).get_json()
    assert missing["error"]["code"] == -32602


def test_resources_prompts_logging_completion(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    uris = {r["uri"] for r in rpc(client, "resources/list", session=session).get_json()["result"]["resources"]}
    assert uris == {"orchestrator://research/info", "orchestrator://search/info", "orchestrator://dead-letter"}
    templates = rpc(client, "resources/templates/list", session=session).get_json()["result"]["resourceTemplates"]
    assert {t["uriTemplate"] for t in templates} == {
        "orchestrator://tasks/{task_id}/status", "orchestrator://tasks/{task_id}/result",
        *(f"orchestrator://tasks/{{task_id}}/report.{fmt}" for fmt in ("md", "html", "pdf", "docx"))}
    info = rpc(client, "resources/read", {"uri": "orchestrator://research/info"}, session=session).get_json()
    assert json.loads(info["result"]["contents"][0]["text"])["tool"] == "orchestrate_research"
    assert rpc(client, "resources/read", {"uri": "orchestrator://tasks/x/status"},
               session=session).get_json()["error"]["code"] == -32002
    prompt = rpc(client, "prompts/get", {"name": "research", "arguments": {"query": "why sqlite"}},
                 session=session).get_json()["result"]
    assert "orchestrate_research" in prompt["messages"][0]["content"]["text"]
    assert rpc(client, "logging/setLevel", {"level": "debug"}, session=session).get_json()["result"] == {}
    assert rpc(client, "logging/setLevel", {"level": "loud"}, session=session).get_json()["error"]["code"] == -32602
    done = rpc(client, "completion/complete", {"ref": {"type": "ref/prompt", "name": "research"},
                                               "argument": {"name": "sources", "value": "lo"}},
               session=session).get_json()["result"]
    assert done["completion"]["values"] == ["local"]


def test_notifications_get_202_and_get_is_405(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    response = client.post("/mcp", data=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                           headers={**JSON, "Mcp-Session-Id": session})
    assert response.status_code == 202 and response.get_data() == b""
    get = client.get("/mcp", headers={"Accept": "text/event-stream"})
    assert get.status_code == 405 and "POST" in get.headers["Allow"]
    assert client.delete("/mcp", headers={"Mcp-Session-Id": session}).status_code == 204


@pytest.mark.parametrize("body, code", [
    ("garbage{", -32700),
    ('{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600),
    ('{"jsonrpc": "2.0", "id": 1, "method": "no/such"}', -32601),
    ('{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}}', -32602),
    ('{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600),
    ('{"jsonrpc": "2.0", "id": 123456789012345678901234567890, "method": "ping"}', -32600),
    ('{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}', -32600),
    ('{"jsonrpc": "2.0", "id": 1, "method": "completion/complete", "params": {"argument": 1}}', -32602),
    ('{"jsonrpc": "2.0", "id": 1, "method": "tasks/list", "params": {"cursor": 1}}', -32602),
])
def test_bad_json_rpc_gets_the_right_error_never_500(client, body, code):
    response = client.post("/mcp", data=body, headers=JSON)
    assert response.status_code in (200, 400)
    payload = response.get_json()
    assert payload["error"]["code"] == code


def test_malformed_messages_in_a_session_get_json_rpc_errors_never_500(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    for message in ({"jsonrpc": "2.0", "id": 1, "method": []}, {"jsonrpc": "2.0", "id": 1, "method": {"a": 1}},
                    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": []}}):
        response = client.post("/mcp", data=json.dumps(message), headers={**JSON, "Mcp-Session-Id": session})
        assert response.status_code in (200, 400), message
        assert response.get_json()["error"]["code"] in (-32600, -32602), message


def test_batches_follow_the_negotiated_version(client):
    batch = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, "garbage",
                        {"jsonrpc": "2.0", "id": 2, "method": "no/such"}])
    old = client.post("/mcp", data=batch, headers={**JSON, "MCP-Protocol-Version": "2025-03-26"})
    replies = old.get_json()
    assert [r.get("result", r.get("error", {}).get("code")) for r in replies] == [{}, -32600, -32601]
    new = client.post("/mcp", data=batch, headers={**JSON, "MCP-Protocol-Version": "2025-11-25"})
    assert new.status_code == 400 and new.get_json()["error"]["code"] == -32600


def test_origin_and_host_checks(client):
    evil = rpc(client, "ping", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert rpc(client, "ping", headers={"Origin": "http://localhost:3000"}).status_code == 200
    rebinding = rpc(client, "ping", headers={"Host": "evil.example:5060"})
    assert rebinding.status_code == 421
    assert rpc(client, "ping", headers={"MCP-Protocol-Version": "1.0"}).status_code == 400


def test_the_2026_revision_is_not_offered_so_clients_fall_back_to_initialize(client):
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    probe = rpc(client, "server/discover", {"_meta": meta}, headers={"MCP-Protocol-Version": "2026-07-28"})
    assert probe.status_code == 400
    error = probe.get_json()["error"]
    assert error["code"] == -32022 and error["data"]["supported"] == ["2024-11-05", "2025-03-26", "2025-06-18",
                                                                      "2025-11-25"]
    # without the header, server/discover is not a method of the versions offered
    assert rpc(client, "server/discover", {"_meta": meta}).get_json()["error"]["code"] == -32601


def test_notifications_cancelled_cancels_the_task_its_request_started(settings, fake_llm):
    import dataclasses
    import threading
    import time

    fake_llm.state.latency = 0.5
    fake_llm.state.max_concurrency = 1
    app = create_app(dataclasses.replace(settings, llm_provider="openai", openai_base_url=fake_llm.base_url,
                                         openai_api_key="sk-test"))
    try:
        session = initialize(app.test_client()).headers["Mcp-Session-Id"]
        replies = {}

        def call():
            replies["call"] = rpc(app.test_client(), "tools/call", {
                "name": "orchestrate_research", "arguments": {"query": "a long research run", "num_agents": 6}},
                msg_id=41, session=session)

        caller = threading.Thread(target=call)
        caller.start()
        client = app.test_client()
        deadline = time.monotonic() + 10
        while not (tasks := client.get("/tasks").get_json()["tasks"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancel = client.post("/mcp", headers={**JSON, "Mcp-Session-Id": session}, data=json.dumps(
            {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41, "reason": "user"}}))
        assert cancel.status_code == 202
        caller.join(30)
        # the cancelled request gets no response (SHOULD NOT): a stream that ends empty
        assert replies["call"].mimetype == "text/event-stream" and sse_messages(replies["call"]) == []
        assert client.get(f"/tasks/{tasks[0]['task_id']}").get_json()["status"] == "cancelled"
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()


def test_tasks_follow_the_2025_11_25_specification(settings, fake_llm):
    import dataclasses

    fake_llm.state.latency = 0.4
    fake_llm.state.max_concurrency = 1
    app = create_app(dataclasses.replace(settings, llm_provider="openai", openai_base_url=fake_llm.base_url,
                                         openai_api_key="sk-test"))
    try:
        client = app.test_client()
        session = initialize(client).headers["Mcp-Session-Id"]
        tools = rpc(client, "tools/list", session=session).get_json()["result"]["tools"]
        support = {t["name"]: t["execution"]["taskSupport"] for t in tools}
        assert support["orchestrate_research"] == support["orchestrate_search"] == "optional"
        assert support["list_orchestrations"] == support["local_search"] == "forbidden"
        # task augmentation where the tool forbids it: -32601
        forbidden = rpc(client, "tools/call", {"name": "list_orchestrations", "arguments": {}, "task": {}},
                        session=session).get_json()
        assert forbidden["error"]["code"] == -32601
        # bad arguments: a JSON-RPC error naming the field, not a CallToolResult, and no task
        bad = rpc(client, "tools/call", {"name": "orchestrate_research", "task": {},
                                         "arguments": {"query": "ok query", "num_agents": 50}},
                  session=session).get_json()
        assert bad["error"]["code"] == -32602 and "num_agents" in bad["error"]["data"]["fields"]
        assert client.get("/tasks").get_json()["tasks"] == []
        started = rpc(client, "tools/call", {"name": "orchestrate_research", "task": {"ttl": 60000},
                                             "arguments": {"query": "a long research run", "num_agents": 4}},
                      session=session).get_json()["result"]["task"]
        cancelled = rpc(client, "tasks/cancel", {"taskId": started["taskId"]}, session=session).get_json()["result"]
        assert cancelled["taskId"] == started["taskId"] and cancelled["status"] == "cancelled"
        got = rpc(client, "tasks/get", {"taskId": started["taskId"]}, session=session).get_json()["result"]
        assert got["status"] == "cancelled"
        again = rpc(client, "tasks/cancel", {"taskId": started["taskId"]}, session=session).get_json()
        assert again["error"]["code"] == -32602
        result = rpc(client, "tasks/result", {"taskId": started["taskId"]}, session=session).get_json()["result"]
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": started["taskId"]}
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()


def test_completion_cursors_and_resource_errors_are_invalid_params_not_internal_errors(client):
    session = initialize(client).headers["Mcp-Session-Id"]

    def error(method, params):
        return rpc(client, method, params, session=session).get_json()["error"]

    for argument in ("sources", 5, ["x"], {"value": "lo"}):
        assert error("completion/complete", {"ref": {"type": "ref/prompt", "name": "research"},
                                             "argument": argument})["code"] == -32602
    assert error("completion/complete", {"ref": {"type": "ref/prompt", "name": "no-such-prompt"},
                                         "argument": {"name": "query", "value": ""}})["code"] == -32602
    no_ref = error("completion/complete", {"ref": "research", "argument": {"name": "query", "value": ""}})
    assert no_ref["code"] == -32602
    resource = rpc(client, "completion/complete", {"ref": {"type": "ref/resource",
                                                           "uri": "orchestrator://tasks/{task_id}/status"},
                                                   "argument": {"name": "task_id", "value": "zz"}}, session=session)
    assert resource.get_json()["result"]["completion"]["values"] == []
    for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
        assert error(method, {"cursor": "bogus"})["code"] == -32602, method
    for uri in ("orchestrator://nope", "orchestrator://tasks/x/status", "orchestrator://tasks/x/other"):
        missing = error("resources/read", {"uri": uri})
        assert missing["code"] == -32002 and missing["data"]["uri"] == uri


def test_log_messages_follow_the_level_the_client_set(client):
    session = initialize(client).headers["Mcp-Session-Id"]
    assert rpc(client, "logging/setLevel", {"level": "info"}, session=session).get_json()["result"] == {}
    response = rpc(client, "tools/call", {"name": "orchestrate_search", "arguments": {"query": "sqlite store"}},
                   session=session, msg_id=9)
    assert response.mimetype == "text/event-stream"
    messages = sse_messages(response)
    logs = [m["params"] for m in messages if m.get("method") == "notifications/message"]
    assert logs and all(m["level"] in ("info", "notice", "warning", "error") for m in logs)
    assert any(m["data"]["event_type"] == "workflow_complete" for m in logs)
    assert messages[-1]["id"] == 9 and messages[-1]["result"]["structuredContent"]["status"] == "completed"
    # a level above every event sends none
    assert rpc(client, "logging/setLevel", {"level": "emergency"}, session=session).get_json()["result"] == {}
    quiet = rpc(client, "tools/call", {"name": "orchestrate_search", "arguments": {"query": "sqlite store"}},
                session=session, msg_id=10)
    assert not [m for m in sse_messages(quiet) if m.get("method") == "notifications/message"]
