"""Stream admission (issue #14 item 2, DESIGN §13 "Streams capacity"): with the default
THREADS, STREAM_RESERVE_THREADS and MAX_STREAMS a 4-worker service holds at least 500
concurrent task streams (issue 19: they leave their request thread for the worker's fan-out
thread once caught up); streams beyond a worker's capacity, min(MAX_STREAMS, THREADS -
STREAM_RESERVE_THREADS), get 503 with Retry-After at once (never a hang); /health, REST and
MCP calls are answered meanwhile. Task streams and thread-bound ones (the legacy /sse) count
against the same capacity."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from mcp.settings import Settings
from tests.conftest import Service

# serial: its bound is "answered within a second while the streams are open", not under other tests' load
pytestmark = [pytest.mark.slow, pytest.mark.serial]
DEFAULTS = Settings.from_env({})
# design: past the host's capacity, so that the last ones are refused
CAPACITY = 4 * min(DEFAULTS.max_streams, DEFAULTS.threads - DEFAULTS.stream_reserve_threads)
READERS = CAPACITY + 60
# How long a reader keeps reconnecting after 503s, as EventSource and our clients do.
RECONNECT_FOR = 40.0


@dataclass
class Readers:
    """READERS raw SSE readers on one asyncio loop in a thread; each keeps its stream open."""

    port: int
    path: str
    first_answer: list[float] = field(default_factory=list)  # seconds from connect to status line
    refusals: list[dict] = field(default_factory=list)  # status, Retry-After and body of each 503
    other: list[bytes] = field(default_factory=list)
    open_now: int = 0

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        outcomes = await asyncio.gather(*(self._reader() for _ in range(READERS)), return_exceptions=True)
        self.other.extend(repr(o).encode() for o in outcomes if isinstance(o, BaseException))

    async def _reader(self) -> None:
        deadline = time.monotonic() + RECONNECT_FOR
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                         "Connection: close\r\n\r\n".encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 30)
            self.first_answer.append(time.monotonic() - started)
            headers = {}
            while (line := await reader.readline()).strip():
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if b" 200 " in status:
                self.open_now += 1
                await self.stop.wait()
                writer.close()
                return
            body = await reader.read()
            writer.close()
            if b" 503 " not in status:
                self.other.append(status + body)
                return
            self.refusals.append({"retry_after": headers.get("retry-after"), "body": json.loads(body)})
            await asyncio.sleep(float(headers.get("retry-after", "1")))

    def start(self) -> Readers:
        self.thread.start()
        return self

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def timed(method: str, url: str, **kwargs) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = requests.request(method, url, headers={"Connection": "close"}, timeout=10, **kwargs)
    return time.monotonic() - started, response


def test_streams_past_capacity_on_default_settings_leave_health_rest_and_mcp_answered(tmp_path, fake_llm):
    capacity = CAPACITY
    assert capacity >= 500 and DEFAULTS.threads - DEFAULTS.stream_reserve_threads >= 1, \
        "the defaults must let one host serve 500 task streams"
    fake_llm.state.latency = 60.0  # the task stays running while the streams are held
    # design: rate limits off: 300 readers and their reconnects from one address pass the
    # per-IP RATE_LIMIT_DEFAULT (600 per minute), which is that limit working; this test is
    # about threads.
    service = Service(tmp_path / "data", {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                                          "OPENAI_API_KEY": "sk-test", "RATE_LIMIT_ENABLED": "0"},
                      tmp_path / "service.log")
    for name in ("THREADS", "MAX_STREAMS", "STREAM_RESERVE_THREADS"):
        service.env.pop(name, None)  # this test is about the defaults, whatever the caller's environment
    service.start()
    readers = None
    try:
        task_id = service.post("/tools/orchestrate_research", json={"query": "stream admission under load",
                                                                    "num_agents": 2}).json()["task_id"]
        readers = Readers(service.port, f"/stream/{task_id}").start()
        deadline = time.monotonic() + RECONNECT_FOR
        while readers.open_now < capacity and time.monotonic() < deadline:
            time.sleep(0.2)
        # the readers retry until they land on a worker with room; on a loaded host some may
        # still be waiting out a Retry-After, so the bound is issue 19's 500, not the capacity
        assert readers.open_now >= 500, (readers.open_now, len(readers.refusals), readers.other[:3])

        # While every worker holds its streams, ordinary requests are answered at once.
        mcp_call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "list_orchestrator_patterns", "arguments": {}}}
        for _ in range(8):  # fresh connections, so each kind reaches several workers
            took, health = timed("GET", f"{service.url}/health")
            assert health.status_code == 200 and took < 1.0, (took, health.text[:300])
            took, tasks = timed("GET", f"{service.url}/tasks")
            assert tasks.status_code == 200 and took < 1.0, took
            took, called = timed("POST", f"{service.url}/mcp", json=mcp_call)
            assert called.status_code == 200 and called.json()["result"]["isError"] is False and took < 1.0, took

        # Every reader got an answer, none hung; the refused ones got 503 + Retry-After as JSON.
        assert max(readers.first_answer) < 10.0
        assert readers.refusals and not readers.other, readers.other[:3]
        for refusal in readers.refusals:
            assert refusal["retry_after"] == "2"
            assert refusal["body"]["error"] == "unavailable"
            assert refusal["body"]["details"]["streams"]["open"] <= refusal["body"]["details"]["streams"]["capacity"]

        # /health reports streams open vs capacity per worker (from heartbeats, every 5 s).
        deadline = time.monotonic() + 15
        while True:
            streams = service.get("/health").json()["streams"]
            if len(streams["workers"]) == 4 and streams["open"] >= capacity or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert streams["capacity"] == capacity and len(streams["workers"]) == 4, streams
        assert all(w["open"] <= w["capacity"] == capacity // 4 for w in streams["workers"]), streams
        assert streams["open"] >= 500, streams
        metrics = service.get("/metrics").text
        assert f"streaming_capacity_connections {float(capacity)}" in metrics
        refused = [line for line in metrics.splitlines() if line.startswith("streaming_refused_total ")]
        assert refused and float(refused[0].split()[1]) >= 1
    finally:
        if readers is not None:
            readers.close()
        service.stop()


def open_raw(port: int, path: str) -> tuple[socket.socket, bytes]:
    """The socket and what was read up to the end of the head, with whatever came with it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head


def test_task_streams_leave_their_thread_and_every_stream_counts_against_the_capacity(tmp_path, fake_llm):
    """One worker with 4 slots (THREADS=20, STREAM_RESERVE_THREADS=16): 3 task streams and one
    legacy /sse stream fill it, whatever kind, and the next of either kind is refused with
    503; /health answers throughout; a task stream handed to the fan-out thread still gets
    its events live and its chunked end."""
    fake_llm.state.latency = 1.0
    service = Service(tmp_path / "data", {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": fake_llm.base_url,
                                          "OPENAI_API_KEY": "sk-test", "RATE_LIMIT_ENABLED": "0", "WORKERS": "1",
                                          "THREADS": "20", "STREAM_RESERVE_THREADS": "16"},
                      tmp_path / "service.log")
    service.env.pop("MAX_STREAMS", None)
    service.start()
    held: list[socket.socket] = []
    try:
        task_id = service.post("/tools/orchestrate_research", json={"query": "streams without threads",
                                                                    "num_agents": 2}).json()["task_id"]
        heads = []
        for _ in range(3):
            sock, head = open_raw(service.port, f"/stream/{task_id}")
            assert head.startswith(b"HTTP/1.1 200"), head
            held.append(sock)
            heads.append(head)
        sock, head = open_raw(service.port, "/sse")
        held.append(sock)
        assert head.startswith(b"HTTP/1.1 200"), head
        for path in (f"/stream/{task_id}", "/sse"):
            sock, head = open_raw(service.port, path)
            held.append(sock)
            assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 2" in head, (path, head)
        took, health = timed("GET", f"{service.url}/health")
        assert health.status_code == 200 and took < 1.0, took
        streams = health.json()["streams"]["workers"]
        assert streams[0]["capacity"] == 4 and streams[0]["open"] <= 4, streams
        # a handed-off stream runs to the task's end: chunked, every event in order, the last chunk
        body = heads[0].split(b"\r\n\r\n", 1)[1]  # the first events may have come with the head
        held[0].settimeout(60)
        while not body.endswith(b"\r\n0\r\n\r\n"):
            data = held[0].recv(65536)
            assert data, body[-300:]
            body += data
        ids = [int(i) for i in re.findall(rb"\nid: (\d+)\n", body)]
        assert ids == list(range(1, len(ids) + 1)) and b"event: workflow_complete" in body
    finally:
        for sock in held:
            sock.close()
        service.stop()
