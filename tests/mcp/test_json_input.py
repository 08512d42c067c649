"""One set of JSON rules for every way in (REST, Streamable HTTP at /mcp and /, legacy
POST /messages, stdio) and every way out (store, webhooks, responses): deep nesting and lone
surrogates are refused with 400 `invalid_json` / JSON-RPC -32700 naming the reason, never a
500 or a -32603; text that did get in from elsewhere is written without failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp import jsonio
from mcp.services import EXTENSION
from mcp.store import open_store
from orchestration.safejson import loads

ROOT = Path(__file__).resolve().parents[2]
DEEP = b"[" * 100_000 + b"]" * 100_000  # the issue's 200 KB body, under MAX_CONTENT_LENGTH
LONE = b'{"query": "lone \\ud800 surrogate"}'
JSON = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
# body, the reason the rules give for refusing it
REFUSED = [
    (DEEP, "too_deep"),
    (b'{"query": ' + b"[" * 65 + b"]" * 65 + b"}", "too_deep"),
    (LONE, "lone_surrogate"),
    (b'{"query": "low first \\udc00"}', "lone_surrogate"),
    (b'{"query": "bad bytes \xff\xfe here"}', "not_utf8"),
    (b'{"query": "encoded surrogate \xed\xa0\x80"}', "not_utf8"),
    (b'{"query": "valid query", "max_cost_usd": 1e400}', "number_out_of_range"),
    (b'{"query": "valid query", "max_cost_usd": NaN}', "malformed"),
    (b'{"query": "valid query", "max_cost_usd": -Infinity}', "malformed"),
    (b'{"query": "truncated', "malformed"),
    (b"", "malformed"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One app for the many refusals below: each app a test builds keeps a few descriptors
    open until the process ends, and these cases need no fresh state."""
    from app import create_app
    from mcp.settings import Settings

    application = create_app(Settings.from_env({}, data_dir=str(tmp_path_factory.mktemp("json") / "data"),
                                               docs_dir=str(ROOT / "docs"), log_format="text"))
    yield application
    application.extensions[EXTENSION].runtime.stop()


@pytest.fixture
def client(shared):
    return shared.test_client()


@pytest.fixture
def app(shared):
    return shared


SESSION_TTL = 3600.0


def rpc_body(params_query: bytes) -> bytes:
    return (b'{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "orchestrate_search", '
            b'"arguments": {"query": ' + params_query + b"}}}")


@pytest.mark.parametrize("body, reason", [r for r in REFUSED if r[0]])
def test_rest_refuses_bad_json_with_400_invalid_json_naming_the_reason(client, body, reason):
    response = client.post("/tools/orchestrate_search", data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    doc = response.get_json()
    assert doc["error"] == "invalid_json" and doc["details"]["reason"] == reason
    assert "_body" in doc["details"]["fields"]


@pytest.mark.parametrize("path", ["/mcp", "/"])
@pytest.mark.parametrize("body, reason", REFUSED)
def test_streamable_http_answers_parse_error_naming_the_reason(client, path, body, reason):
    response = client.post(path, data=body, headers=JSON)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == -32700 and error["data"]["reason"] == reason, error


def test_the_issue_s_two_inputs_inside_a_tools_call(client):
    """The lone surrogate of the issue sent as a tool argument, and nesting inside params."""
    for query, reason in ((b'"lone \\ud800 surrogate"', "lone_surrogate"), (b"[" * 5000 + b"]" * 5000, "too_deep")):
        response = client.post("/mcp", data=rpc_body(query), headers=JSON)
        assert response.get_json()["error"]["data"]["reason"] == reason


def test_nesting_up_to_the_limit_is_accepted(client):
    nested = "[" * 62 + "]" * 62  # inside {"query": ...}: 64 levels in all
    response = client.post("/tools/orchestrate_search", data=f'{{"query": {nested}}}', content_type="application/json")
    doc = response.get_json()
    assert response.status_code == 400 and doc["error"] == "validation_error" and "query" in doc["details"]["fields"]
    assert loads("[" * 64 + "]" * 64) and loads(b'"a pair \\ud83d\\ude00 is fine"') == "a pair \U0001F600 is fine"


def test_duplicate_keys_keep_the_last_and_big_integers_become_numbers_that_store(client):
    response = client.post("/tools/orchestrate_search", content_type="application/json",
                           data=b'{"query": "first", "query": "valid query", "max_results": 1, "wait": true}')
    assert response.status_code == 200 and response.get_json()["query"] == "valid query"
    init = client.post("/mcp", headers=JSON, data=json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "clientInfo": {"name": "x", "big": 10 ** 40, "neg": -(10 ** 30)}}}))
    assert init.status_code == 200
    ping = client.post("/mcp", headers={**JSON, "Mcp-Session-Id": init.headers["Mcp-Session-Id"]},
                       data='{"jsonrpc": "2.0", "id": 2, "method": "ping"}')
    assert ping.get_json()["result"] == {}


def test_legacy_messages_endpoint_delivers_the_parse_error_on_the_stream(app, client):
    store = app.extensions[EXTENSION].store
    store.save_session("legacy-1", {"owner": "anonymous", "protocol_version": "2024-11-05", "legacy": True},
                       SESSION_TTL)
    for body, reason in ((DEEP, "too_deep"), (LONE, "lone_surrogate")):
        before = store.session_messages("legacy-1", 0)
        assert client.post("/messages?session_id=legacy-1", data=body, headers=JSON).status_code == 202
        after = store.session_messages("legacy-1", before[-1][0] if before else 0)
        assert after[-1][1]["error"]["code"] == -32700 and after[-1][1]["error"]["data"]["reason"] == reason


def test_stdio_answers_bad_lines_and_keeps_serving(tmp_path):
    lines = [DEEP, LONE, b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "\xff"}}',
             b'{"jsonrpc": "2.0", "id": 2, "method": "ping"}']
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "DOCS_DIR": str(ROOT / "docs"), "LOG_FORMAT": "text"}
    run = subprocess.run([sys.executable, "-m", "mcp.stdio"], input=b"\n".join(lines) + b"\n", cwd=ROOT, env=env,
                         capture_output=True, timeout=120)
    replies = [json.loads(line) for line in run.stdout.splitlines()]
    errors = [r["error"]["data"]["reason"] for r in replies if "error" in r]
    assert sorted(errors) == ["lone_surrogate", "not_utf8", "too_deep"], run.stderr[-2000:]
    assert {"jsonrpc": "2.0", "id": 2, "result": {}} in replies
    assert run.returncode == 0


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_text_from_elsewhere_with_lone_surrogates_is_stored_and_sent_cleaned(tmp_path, redis_server, backend):
    """A model's or an SDK's text can hold what a client may not send: the store and the
    webhook payload write it with U+FFFD instead of failing the task."""
    url = f"sqlite:///{tmp_path}/s.db" if backend == "sqlite" else f"{redis_server}/5"
    store = open_store(url)
    value = {"text": "model said \ud800 then \udfff", "n": 10 ** 30}
    store.save_session("s-1", value, SESSION_TTL)
    stored = store.get_session("s-1")
    assert stored["text"] == "model said \ufffd then \ufffd" and stored["n"] == str(10 ** 30)
    assert jsonio.dumps({"a": "\ud800"}) == '{"a":"\ufffd"}'
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(TypeError):  # a bug in the code that built it stays an error
        jsonio.dumps(circular)



def test_json_log_lines_parse_strictly_whatever_was_logged(tmp_path, capsys):
    """Logs follow the same rules as the store and webhooks: a lone surrogate in a logged
    value is U+FFFD, so a strict reader (Loki, jq) never chokes on a line."""
    import logging

    from mcp.observability import configure_logging
    from mcp.settings import Settings

    configure_logging(Settings.from_env({}, data_dir=str(tmp_path), log_format="json"))
    try:
        logging.getLogger("fuzz").warning("model said %s", "lone \ud800", extra={"detail": {"n": 10 ** 30}})
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        configure_logging(Settings.from_env({}, data_dir=str(tmp_path), log_format="text"))
    record = loads(lines[-1])
    assert record["message"] == "model said lone \ufffd" and record["detail"] == {"n": str(10 ** 30)}
