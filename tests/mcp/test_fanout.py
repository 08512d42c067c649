"""The fan-out thread (mcp/fanout.py): streams handed to it get every event once, in order,
framed as gunicorn framed the start of the response (chunked for HTTP/1.1, raw for
HTTP/1.0), keep-alive comments in silence, the end after the terminal event, a reader that
stops reading cut off at the buffer bound, and `reconnect` when the worker stops; each
stream's slot and place in the task's window are given back however it ends. Real SQLite
store, real sockets (socket pairs stand in for the client connections)."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from mcp import fanout
from mcp.store import TaskRecord, open_store
from mcp.streaming import StreamHub


@pytest.fixture
def hub(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    for task_id in ("t1", "t2"):
        store.create_task(TaskRecord(task_id, "research", "q", None, {"query": "q"}, created_at=time.time()))
    hub = StreamHub(store, poll_interval=0.02, capacity=8, max_streams=8, keepalive=0.3)
    hub.start()
    hub.enable_handoff()
    yield hub
    hub.stop()
    hub.fanout.join(5)


def open_stream(hub: StreamHub, task_id: str, last: int, chunked: bool) -> socket.socket:
    """What a request thread does: admit, join the task's window, hand the server's end over."""
    server, client = socket.socketpair()
    assert hub.admit()
    hub.join(task_id)
    hub.hand_off(server, task_id, last, chunked)
    client.settimeout(5)
    return client


def read_until(client: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(client: socket.socket) -> bytes:
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


def unchunk(data: bytes) -> tuple[bytes, bool]:
    """The body of a chunked stream, and whether it ended with the last chunk."""
    body = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return body, rest == b"\r\n"
        body, data = body + rest[:n], rest[n + 2:]
        assert rest[n:n + 2] == b"\r\n"
    return body, False


def ids(body: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^id: (\d+)$", body, re.M)]


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_handed_off_streams_get_every_event_in_order_and_the_end(hub):
    store = hub.store
    for n in range(3):
        store.append_event("t1", "agent_progress", {"n": n})
    chunked = [open_stream(hub, "t1", 1, chunked=True) for _ in range(3)]  # resumed after event 1
    raw = open_stream(hub, "t1", 0, chunked=False)
    assert hub.active_streams == 4 and hub._threads == 0  # no stream holds a thread slot
    for n in range(3, 40):
        event = store.append_event("t1", "agent_progress", {"n": n})
        if n % 3 == 0:
            hub.notify("t1", event.id)  # written by this worker; the others only the poller finds
    store.append_event("t1", "workflow_complete", {"done": True})
    store.append_event("t1", "agent_progress", {"after": "the end"})  # never sent
    for client in chunked:
        body, ended = unchunk(read_to_end(client))
        assert ended and ids(body) == list(range(2, 42)), ids(body)
        assert body.count(b"event: workflow_complete") == 1
    body = read_to_end(raw)
    assert ids(body) == list(range(1, 42)) and body.endswith(b"\n\n")
    wait_for(lambda: hub.active_streams == 0)
    assert not hub._windows and not hub._watches  # every reader left; the poller forgets t1


def test_keep_alive_in_silence_and_a_closed_client_frees_its_slot(hub):
    client = open_stream(hub, "t2", 0, chunked=True)
    data = read_until(client, b"keep-alive")
    assert b": keep-alive\n\n" in unchunk(data + b"0\r\n\r\n")[0]
    client.close()  # the viewer goes away
    wait_for(lambda: hub.active_streams == 0)


def test_a_reader_that_stops_reading_is_cut_off_at_the_bound(hub, monkeypatch):
    monkeypatch.setattr(fanout, "BUFFER_LIMIT", 64 * 1024)
    slow = open_stream(hub, "t2", 0, chunked=False)
    quick = open_stream(hub, "t2", 0, chunked=False)
    received: list[bytes] = []
    reading = threading.Thread(target=lambda: received.append(read_until(quick, b'"n":399', 20)))
    reading.start()
    big = "x" * 4000
    for n in range(400):  # 1.6 MB: far more than the socket buffers and the bound
        hub.notify("t2", hub.store.append_event("t2", "agent_progress", {"n": n, "pad": big}).id)
        time.sleep(0.002)  # events come as a task makes them, not all in one batch
    reading.join(30)
    assert ids(received[0]) == list(range(1, 401))  # the reader that keeps up gets everything
    wait_for(lambda: hub.active_streams == 1)  # the slow one is gone, the quick one stays
    cut = read_to_end(slow)  # what the slow reader had been sent, then the end of the connection
    assert 0 < len(cut) < 2 * 1024 * 1024


def test_a_stopping_worker_tells_every_reader_to_reconnect(hub):
    hub.store.append_event("t1", "agent_progress", {"n": 0})
    chunked = open_stream(hub, "t1", 0, chunked=True)
    raw = open_stream(hub, "t2", 0, chunked=False)
    assert b"id: 1" in read_until(chunked, b"id: 1")
    hub.stop()
    rest = read_to_end(chunked)
    assert rest.endswith(b"0\r\n\r\n") and b'event: reconnect\ndata: {"last_event_id": 1}' in rest
    assert b'event: reconnect\ndata: {"last_event_id": 0}' in read_to_end(raw)
    wait_for(lambda: hub.active_streams == 0)
