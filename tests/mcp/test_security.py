"""API keys: every non-public route needs one; tasks belong to the key that made them."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from app import create_app


@pytest.fixture
def keyed_client(settings, tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\ncarol:{hashlib.sha256(b'carol-secret').hexdigest()}\n")
    app = create_app(dataclasses.replace(settings, api_keys=("alice:alice-secret", "bob:bob-secret"),
                                         api_keys_file=str(keys_file)))
    yield app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()


def test_public_routes_need_no_key(keyed_client):
    for path in ("/", "/health", "/health/live"):
        assert keyed_client.get(path).status_code == 200
    assert keyed_client.get("/.well-known/oauth-protected-resource").status_code == 404


@pytest.mark.parametrize("method, path", [
    ("GET", "/tools"), ("POST", "/tools/orchestrate_research"), ("GET", "/tasks"), ("GET", "/tasks/x"),
    ("GET", "/tasks/x/result"), ("GET", "/tasks/x/events"), ("POST", "/tasks/x/cancel"), ("GET", "/stream/x"),
    ("GET", "/stats"),
])
def test_private_routes_answer_401_without_a_valid_key(keyed_client, method, path):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = keyed_client.open(path, method=method, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.get_json()["error"] == "unauthorized"


def test_tasks_belong_to_the_key_that_created_them(keyed_client):
    alice = {"X-API-Key": "alice-secret"}
    bob = {"Authorization": "Bearer bob-secret"}
    carol = {"X-API-Key": "carol-secret"}
    handle = keyed_client.post("/tools/orchestrate_search", json={"query": "sqlite store"}, headers=alice).get_json()
    assert keyed_client.get(handle["status_url"], headers=alice).status_code == 200
    for other in (bob, carol):
        assert keyed_client.get(handle["status_url"], headers=other).status_code == 404
        assert keyed_client.get(handle["stream_url"], headers=other).status_code == 404
        assert keyed_client.post(f"/tasks/{handle['task_id']}/cancel", headers=other).status_code == 404
        assert keyed_client.get("/tasks", headers=other).get_json()["tasks"] == []
    assert [t["task_id"] for t in keyed_client.get("/tasks", headers=alice).get_json()["tasks"]] == [handle["task_id"]]
