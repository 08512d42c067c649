"""Webhooks: SSRF refusal (never connecting to a private address), subscriptions owned by
their key, and signed delivery that survives the receiver and the service being down."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app import create_app
from mcp.webhooks import refusal
from tests.conftest import free_port
from tests.fakes.receiver import receiver


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.169.254", "fc00::1",
                                     "fe80::1", "127.0.0.1", "::1", "0.0.0.0", "::ffff:10.0.0.1"])
def test_non_public_targets_are_refused_after_resolution_without_connecting(address):
    asked = []

    def resolver(host, port):
        asked.append((host, port))
        return [address]

    why = refusal("https://innocent.example.org/hook", allow_private=False, resolver=resolver)
    assert why and address.split("::ffff:")[-1] in why
    assert asked == [("innocent.example.org", 443)]
    assert refusal("https://innocent.example.org/hook", allow_private=True, resolver=resolver) is None


def test_public_targets_and_bad_schemes():
    assert refusal("https://hooks.example.org/x", False, lambda h, p: ["93.184.216.34"]) is None
    assert "http" in refusal("ftp://hooks.example.org/x", False, lambda h, p: ["93.184.216.34"])


@pytest.fixture
def keyed(settings):
    app = create_app(dataclasses.replace(settings, api_keys=("alice:a-secret", "bob:b-secret")))
    yield app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/h", "http://127.1/h", "http://0x7f000001/h",
                                 "http://2130706433/h", "http://[::1]:9/h", "http://localhost:9/h"])
def test_loopback_in_every_spelling_is_refused(keyed, url):
    response = keyed.post("/webhooks", json={"url": url}, headers={"X-API-Key": "a-secret"})
    assert response.status_code == 400, response.get_json()
    assert "url" in response.get_json()["details"]["fields"]
    task = keyed.post("/tools/orchestrate_search", json={"query": "webhook test", "webhook_url": url},
                      headers={"X-API-Key": "a-secret"})
    assert task.status_code == 400 and "webhook_url" in task.get_json()["details"]["fields"]


def test_subscriptions_belong_to_their_key(settings):
    app = create_app(dataclasses.replace(settings, api_keys=("alice:a-secret", "bob:b-secret"),
                                         webhook_allow_private=True))
    try:
        client = app.test_client()
        alice, bob = {"X-API-Key": "a-secret"}, {"X-API-Key": "b-secret"}
        created = client.post("/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["*"]}, headers=alice)
        assert created.status_code == 201
        hook = created.get_json()
        assert len(hook["secret"]) == 64 and hook["events"] == ["*"]
        assert [h["id"] for h in client.get("/webhooks", headers=alice).get_json()["webhooks"]] == [hook["id"]]
        assert "secret" not in client.get("/webhooks", headers=alice).get_json()["webhooks"][0]
        assert client.get("/webhooks", headers=bob).get_json()["webhooks"] == []
        assert client.get(f"/webhooks/{hook['id']}/deliveries", headers=bob).status_code == 404
        assert client.delete(f"/webhooks/{hook['id']}", headers=bob).status_code == 404
        assert client.post("/webhook/unregister", json={"id": hook["id"]}, headers=alice).status_code == 200
        assert client.get("/webhooks", headers=alice).get_json()["webhooks"] == []
        bad = client.post("/webhooks", json={"url": "http://127.0.0.1:9/h", "events": ["nope"]}, headers=alice)
        assert bad.status_code == 400 and "events" in bad.get_json()["details"]["fields"]
    finally:
        app.extensions["mcp_orchestrator"].runtime.stop()


@pytest.mark.slow
def test_signed_event_reaches_a_receiver_that_was_down_across_a_service_restart(service_factory, tmp_path):
    port = free_port()
    env = {"WEBHOOK_ALLOW_PRIVATE": "1", "WEBHOOK_RETRY_BASE": "0.5"}
    first = service_factory(env, data_dir=tmp_path / "shared")
    hook = first.post("/webhooks", json={"url": f"http://127.0.0.1:{port}/hook"}).json()
    task = first.post("/tools/orchestrate_search", json={"query": "webhook delivery", "num_agents": 2}).json()
    first.wait_status(task["task_id"], {"completed"})
    deadline = time.monotonic() + 20
    while not first.get(f"/webhooks/{hook['id']}/deliveries").json()["deliveries"][0]["attempts"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first.stop()

    server = receiver(port)
    try:
        second = service_factory(env, data_dir=tmp_path / "shared")
        deadline = time.monotonic() + 60
        while not server.received:
            assert time.monotonic() < deadline, second.get(f"/webhooks/{hook['id']}/deliveries").json()
            time.sleep(0.2)
        headers, body = server.received[0]
        expected = "sha256=" + hmac.new(hook["secret"].encode(), headers["X-Webhook-Timestamp"].encode() + b"." + body,
                                        hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Webhook-Signature"], expected)
        assert headers["X-Webhook-Id"].startswith("whd_")
        event = json.loads(body)
        assert event["event_type"] == "workflow_complete" and event["task_id"] == task["task_id"]
        # the receiver holds the request before its answer reaches the service, which only
        # then records the delivery
        while (log := second.get(f"/webhooks/{hook['id']}/deliveries").json()["deliveries"])[0]["status"] == "pending":
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
        assert log[0]["status"] == "delivered" and log[0]["attempts"] >= 2
        time.sleep(1.5)
        assert len(server.received) == 1  # delivered once, not again
    finally:
        server.shutdown()


class DripHandler(BaseHTTPRequestHandler):
    """A receiver that answers 200, then a 100-byte body one byte every 0.3 s (30 s in all):
    every read arrives within a client's per-read timeout, so only a bound on the whole
    attempt stops it."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass


def test_a_receiver_dripping_its_answer_costs_one_bounded_attempt(settings, tmp_path):
    """Found by issue 23's fuzz: the deliverer read a receiver's whole body, so a receiver
    dripping it (or sending 50 MB) held every other delivery for as long as it liked."""
    import asyncio

    import httpx

    from mcp.store import open_store
    from mcp.webhooks import DELIVERY_TIMEOUT, Webhooks

    server = ThreadingHTTPServer(("127.0.0.1", 0), DripHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    store = open_store(f"sqlite:///{tmp_path}/hooks.db")
    hooks = Webhooks(dataclasses.replace(settings, webhook_allow_private=True), store)
    hook = hooks.subscribe("alice", f"http://127.0.0.1:{server.server_address[1]}/h", ["*"], None, "s")
    store.enqueue_delivery({"id": "whd_1", "webhook_id": hook["id"], "task_id": "t", "event_id": 1,
                            "event_type": "workflow_start", "payload": "{}", "next_attempt_at": time.time(),
                            "created_at": time.time()})

    async def deliver() -> float:
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT) as client:
            await hooks.deliver_due("w1", client)
        return time.monotonic() - started

    try:
        elapsed = asyncio.run(deliver())
    finally:
        server.shutdown()
        server.server_close()
    assert store.deliveries(hook["id"])[0]["status"] == "delivered"
    assert elapsed < DELIVERY_TIMEOUT + 5  # the drip lasts 30 s; the attempt is bounded well before
