"""The dead-letter list and operator alerts (issue 16): a task that failed for good and a
delivery out of retries land in GET /dead-letter; retry runs them again; the gauge follows;
ALERT_WEBHOOK_URL hears of each new entry and of each rate-limit breach once per window."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from mcp.store import TaskRecord, dead_letter_id
from tests.conftest import free_port
from tests.fakes.receiver import receiver


def entry(kind, ref, owner="alice", at=None):
    return {"id": dead_letter_id(kind, ref), "kind": kind, "ref": ref, "owner": owner, "reason": "error",
            "error": "boom", "created_at": at or time.time(), "attempts": 1}


def test_entries_are_listed_newest_first_by_owner_and_kind_and_recorded_once(store):
    for i in range(5):
        assert store.add_dead_letter(entry("task" if i % 2 else "webhook", f"r{i}", "alice" if i < 4 else "bob",
                                           at=1000.0 + i))
    assert store.add_dead_letter({**entry("task", "r1", at=2000.0), "error": "again"}) is False  # same failure
    assert store.count_dead_letters() == 5
    page, cursor = store.list_dead_letters(limit=2)
    assert [e["ref"] for e in page] == ["r1", "r4"]
    rest, end = store.list_dead_letters(cursor=cursor)
    assert [e["ref"] for e in rest] == ["r3", "r2", "r0"] and end is None
    assert [e["ref"] for e in store.list_dead_letters(owner="alice", kind="task")[0]] == ["r1", "r3"]
    assert store.get_dead_letter(dead_letter_id("task", "r1"))["error"] == "again"
    assert store.delete_dead_letter(dead_letter_id("task", "r1")) and not store.delete_dead_letter("dl_nope")
    assert store.count_dead_letters() == 4


def test_only_a_failed_task_is_reopened_and_its_checkpoints_stay(store):
    for task_id, status in (("t_failed", "failed"), ("t_done", "completed")):
        store.create_task(TaskRecord(task_id=task_id, orchestrator="research", query="q", title=None,
                                     params={"query": "q"}, created_at=time.time()))
        store.claim_task(task_id, "w1", 30)
        store.save_checkpoint(task_id, "plan", [1])
        store.finish_task(task_id, "w1", status, {"status": status}, "x", "workflow_error", {})
    assert store.reopen_task("t_failed") and not store.reopen_task("t_done")
    task = store.get_task("t_failed")
    assert (task.status, task.error, task.attempts, task.started_at) == ("pending", None, 0, None)
    assert store.claimable_tasks(10) == ["t_failed"] and store.load_checkpoints("t_failed") == {"plan": [1]}
    assert store.get_result("t_failed") is None
    assert store.claim_task("t_failed", "w2", 30).status == "running"


def test_retention_removes_the_entries_of_the_tasks_it_removes(store):
    store.create_task(TaskRecord(task_id="t1", orchestrator="research", query="q", title=None,
                                 params={"query": "q"}, created_at=time.time()))
    store.finish_task("t1", None, "failed", {}, "x", "workflow_error", {})
    store.add_dead_letter(entry("task", "t1"))
    store.add_dead_letter(entry("task", "elsewhere"))
    store.sweep(time.time() + 1, 0, 10)
    assert [e["ref"] for e in store.list_dead_letters()[0]] == ["elsewhere"]


def wait_for(check, timeout=60.0, what=""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def signed(headers: dict, body: bytes, secret: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), headers["X-Webhook-Timestamp"].encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Webhook-Signature", ""), expected)


def metric(service, name: str) -> float:
    text = service.get("/metrics", headers={"X-API-Key": "ops-key"}).text
    lines = [ln for ln in text.splitlines() if ln.startswith(name)]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


ALERT_SECRET = "alert-secret-0123456789"


@pytest.mark.slow
def test_a_failed_task_and_a_dead_receiver_land_in_the_dead_letter_and_retry_runs_them_again(
        service_factory, fake_llm):
    from tests.test_service import QUERY

    alerts = receiver()
    hook_port = free_port()  # nothing listens there yet
    env = {"API_KEYS": "alice:alice-key,bob:bob-key", "ADMIN_KEYS": "ops:ops-key", "LLM_PROVIDER": "openai",
           "OPENAI_BASE_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test", "LLM_MAX_ATTEMPTS": "1",
           "WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_RETRY_BASE": "0.05", "RATE_LIMIT_ENABLED": "0",
           "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{alerts.server_port}/alerts",
           "ALERT_WEBHOOK_SECRET": ALERT_SECRET}
    service = service_factory(env)
    alice = {"X-API-Key": "alice-key"}
    hook = service.post("/webhooks", headers=alice, json={"url": f"http://127.0.0.1:{hook_port}/hook"}).json()
    fake_llm.state.fail_match = f"Question: {QUERY}\n\n### "  # the synthesis, after plan and agents are done
    task_id = service.post("/tools/orchestrate_research", headers=alice,
                           json={"query": QUERY, "num_agents": 2}).json()["task_id"]
    wait_for(lambda: service.get(f"/tasks/{task_id}", headers=alice).json()["status"] == "failed", what="task")

    entries = wait_for(lambda: len(service.get("/dead-letter", headers=alice).json()["entries"]) == 2
                       and service.get("/dead-letter", headers=alice).json()["entries"], what="two entries")
    by_kind = {e["kind"]: e for e in entries}
    assert by_kind["task"]["ref"] == task_id and by_kind["task"]["owner"] == "alice"
    assert by_kind["task"]["reason"] == "error" and "500" in by_kind["task"]["error"]
    assert by_kind["webhook"]["reason"] == "retries_exhausted" and by_kind["webhook"]["attempts"] == 8
    assert set(entries[0]) == {"id", "kind", "ref", "owner", "reason", "error", "created_at", "attempts"}
    assert service.get("/dead-letter?kind=task", headers=alice).json()["entries"] == [by_kind["task"]]
    # another key sees none of it and cannot touch it; the admin key sees it all
    assert service.get("/dead-letter", headers={"X-API-Key": "bob-key"}).json()["entries"] == []
    assert service.post(f"/dead-letter/{by_kind['task']['id']}/retry",
                        headers={"X-API-Key": "bob-key"}).status_code == 404
    assert {e["id"] for e in service.get("/dead-letter", headers={"X-API-Key": "ops-key"}).json()["entries"]} == \
        {e["id"] for e in entries}
    assert wait_for(lambda: metric(service, "dead_letter_entries") == 2, 20, "gauge")
    # the operator heard of both, signed
    wait_for(lambda: len(alerts.received) >= 2, 20, "alerts")
    kinds = set()
    for headers, body in alerts.received:
        assert signed(headers, body, ALERT_SECRET)
        alert = json.loads(body)
        assert alert["type"] == "dead_letter"
        kinds.add(alert["data"]["kind"])
    assert kinds == {"task", "webhook"}

    # fix the causes, then retry both
    fake_llm.state.fail_match = ""
    planner_calls = sum(1 for c in fake_llm.state.counted() if c.role == "planner")
    hooks = receiver(hook_port)
    retried = service.post(f"/dead-letter/{by_kind['task']['id']}/retry", headers=alice)
    assert retried.status_code == 202 and retried.json()["status_url"].endswith(task_id)
    assert service.post(f"/dead-letter/{by_kind['webhook']['id']}/retry", headers=alice).status_code == 202
    wait_for(lambda: service.get(f"/tasks/{task_id}", headers=alice).json()["status"] == "completed",
             what="the retried task completes")
    result = service.get(f"/tasks/{task_id}/result", headers=alice).json()
    assert result["status"] == "completed" and result["final_synthesis"]
    assert sum(1 for c in fake_llm.state.counted() if c.role == "planner") == planner_calls  # from checkpoints
    events = service.get(f"/tasks/{task_id}/events", headers=alice).json()["events"]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    resumed = [e for e in events if e["event_type"] == "workflow_resumed"]
    assert resumed and resumed[-1]["data"]["retry"] is True and "plan" in resumed[-1]["data"]["checkpoints"]
    # the retried delivery arrives signed with the subscription's secret; the entries are gone
    headers, body = wait_for(lambda: hooks.received and hooks.received[0], 30, "delivery")
    assert signed(headers, body, hook["secret"]) and json.loads(body)["task_id"] == task_id
    # the receiver holds the body before its answer reaches the service, which clears the entry then
    wait_for(lambda: service.get("/dead-letter", headers=alice).json()["entries"] == [], 20, "entries cleared")
    assert wait_for(lambda: metric(service, "dead_letter_entries") == 0, 20, "gauge back to 0")
    alerts.shutdown()
    hooks.shutdown()


@pytest.mark.slow
def test_a_rate_limit_breach_is_counted_logged_and_alerted_once_per_window(service_factory):
    alerts = receiver()
    service = service_factory({"API_KEYS": "alice:alice-key", "RATE_LIMIT_ORCHESTRATE": "2 per minute",
                               "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{alerts.server_port}/a",
                               "WEBHOOK_SECRET": ALERT_SECRET})
    alice = {"X-API-Key": "alice-key"}
    codes = [service.post("/tools/orchestrate_search", headers=alice, json={"query": f"breach {i}"}).status_code
             for i in range(5)]
    assert codes == [202, 202, 429, 429, 429]
    wait_for(lambda: alerts.received, 20, "breach alert")
    time.sleep(1.5)  # any second alert would have arrived by now
    assert len(alerts.received) == 1
    headers, body = alerts.received[0]
    alert = json.loads(body)
    assert signed(headers, body, ALERT_SECRET) and alert["type"] == "rate_limit_breach"
    assert alert["data"]["key"] == "alice" and alert["data"]["limit"] == "2 per 1 minute"
    text = service.get("/metrics", headers=alice).text
    assert 'rate_limit_breaches_total{key="alice",limit="2 per 1 minute"} 1.0' in text
    alerts.shutdown()


def test_dead_letter_routes_refuse_bad_input_with_json(client):
    assert client.get("/dead-letter?kind=nope").status_code == 400
    assert client.get("/dead-letter?cursor=zzz").get_json()["details"]["fields"]["cursor"]
    assert client.post("/dead-letter/dl_missing/retry").status_code == 404
    assert client.delete("/dead-letter/dl_missing").status_code == 404
    assert client.get("/dead-letter").get_json() == {"entries": [], "next_cursor": None}


def test_mcp_clients_read_their_dead_letters_as_a_resource(app, client):
    svc = app.extensions["mcp_orchestrator"]
    svc.dead_letters.record("task", "research_x", "anonymous", "timeout", "timed out after 10 s", 1)
    svc.dead_letters.record("task", "research_y", "someone-else", "error", "boom", 1)

    def rpc(method, params):
        return client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                           headers={"Accept": "application/json"}).get_json()

    listed = rpc("resources/list", {})["result"]["resources"]
    assert "orchestrator://dead-letter" in {r["uri"] for r in listed}
    content = rpc("resources/read", {"uri": "orchestrator://dead-letter"})["result"]["contents"][0]
    entries = json.loads(content["text"])["entries"]
    assert [e["ref"] for e in entries] == ["research_x"] and entries[0]["reason"] == "timeout"
