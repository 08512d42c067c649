"""One thread per worker writes every handed-off task stream (issue 19, DESIGN §13).

Under gthread a stream served from a generator holds a request thread for its whole life:
a worker with 125 dashboards had 125 threads, each woken for every event and each taking
its turn on the GIL to send the same frame. Here a task stream, once it has replayed what
its client missed, hands the client's connection to its worker's fan-out thread and its
request thread goes back to the pool. The fan-out thread reads each task's new events
once (through the hub's shared window), encodes each once, and writes them to every
connection following the task with non-blocking sends.

- Framing: gunicorn answered the request and sent the headers; with HTTP/1.1 the body is
  chunked, so the fan-out frames every write as a chunk and ends the stream with the last
  chunk; with HTTP/1.0 it writes the raw stream and closes.
- The connection is taken from gunicorn by duplicating its descriptor; gunicorn's own
  descriptor is pointed at a dead socket, so what gunicorn does when the request ends (the
  last chunk, shutdown, close) reaches nothing the client sees. Gunicorn is also told to
  close, never to keep the connection for another request.
- A reader that cannot keep up is cut off once BUFFER_LIMIT bytes wait for it; it comes
  back with Last-Event-ID, as EventSource does, and replays from the store.
- Keep-alive comments every STREAM_KEEPALIVE seconds of silence; the terminal event ends
  the stream; a stopping worker sends every reader a `reconnect` event (as a threaded
  stream does) and closes."""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestration.models import TERMINAL_EVENTS

log = logging.getLogger(__name__)

# Bytes that may wait for one reader when new events come; beyond, it is cut off (a reader
# that keeps up has sent the previous batch by then; about two thousand events).
BUFFER_LIMIT = 1 << 20
# How long a stopping worker keeps writing the goodbye frames to readers that lag.
STOP_FLUSH_SECONDS = 1.0
LAST_CHUNK = b"0\r\n\r\n"
BATCH = 500  # events read at once for one group of readers


def take_socket(sock: Any) -> socket.socket | None:
    """The client's connection as a non-blocking socket of our own, or None when it cannot
    be taken (TLS inside gunicorn, not a socket): that stream then keeps its thread."""
    if type(sock) is not socket.socket or sock.fileno() < 0:
        return None
    fd = sock.fileno()
    mine = os.dup(fd)
    dead, peer = socket.socketpair()
    peer.close()
    try:
        os.dup2(dead.fileno(), fd, inheritable=False)
    finally:
        dead.close()
    taken = socket.socket(fileno=mine)
    taken.setblocking(False)
    return taken


def chunk(data: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(data), data)


def reconnect_frame(last: int) -> bytes:
    """What a stream of a stopping worker sends last, handed off or not: come back (to
    another worker) from `last`."""
    return f'retry: 1000\nevent: reconnect\ndata: {{"last_event_id": {last}}}\n\n'.encode()


class _Reader:
    __slots__ = ("sock", "task_id", "last", "chunked", "out", "written_at", "ending", "writing")

    def __init__(self, sock: socket.socket, task_id: str, last: int, chunked: bool) -> None:
        self.sock = sock
        self.task_id = task_id
        self.last = last
        self.chunked = chunked
        self.out = bytearray()
        self.written_at = time.monotonic()
        self.ending = False  # the last frame is queued: close once `out` is sent
        self.writing = False  # registered for EVENT_WRITE


class FanOut:
    """The fan-out thread of one worker. `hub` gives the events (`events_after`), follows
    tasks for the poller (`follow_task`/`unfollow_task`) and owns the stream slots."""

    def __init__(self, hub: Any, encode: Callable[[Any], str], keepalive: float) -> None:
        self.hub = hub
        self.encode = encode
        self.keepalive = keepalive
        # design: the selector and the wake-up pair are made with the thread, on the first
        # hand-off: an app that never hands a stream off (tests, other servers) holds no fds.
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._lock = threading.Lock()
        self._incoming: list[_Reader] = []
        self._dirty: set[str] = set()
        self._followed: set[str] = set()  # tasks with a reader here (read without the lock)
        self._readers: dict[str, list[_Reader]] = {}  # the fan-out thread's own
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_keepalive_check = 0.0

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._thread = threading.Thread(target=self._run, name="stream-fanout", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Begin closing every stream (safe in a signal handler: no lock is taken)."""
        self._stopping.set()
        self._wake()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def adopt(self, sock: socket.socket, task_id: str, last: int, chunked: bool) -> None:
        """Take over a stream whose client has every event up to `last`. The caller has
        joined the hub's window of `task_id` and holds a stream slot: both are the fan-out's
        now, and it gives them back when the stream ends."""
        sock.setblocking(False)
        self.start()
        with self._lock:
            self._incoming.append(_Reader(sock, task_id, last, chunked))
            self._followed.add(task_id)
            self._dirty.add(task_id)  # an event may have landed since the caller's last read
        self._wake()

    def notify(self, task_id: str) -> None:
        """`task_id` has a new event (the hub's notify)."""
        if task_id in self._followed:
            with self._lock:
                self._dirty.add(task_id)
            self._wake()

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return  # no thread yet: nothing to wake
        try:
            wake.send(b"\0")
        except OSError:
            pass  # the pair is full: the thread is woken already

    # -- the fan-out thread ------------------------------------------------------------------

    def _run(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stopping.is_set():
                timeout = 0.0 if self._dirty else max(0.0, min(1.0, self._next_keepalive_check - time.monotonic()))
                for key, mask in self._selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                        continue
                    reader = key.data
                    if mask & selectors.EVENT_READ:
                        self._readable(reader)
                    if mask & selectors.EVENT_WRITE and reader.sock is not None:
                        self._flush(reader)
                self._take_work()
                if time.monotonic() >= self._next_keepalive_check:
                    self._keepalives()
        except Exception:  # noqa: BLE001 - the streams end (clients reconnect), the worker lives
            log.exception("stream fan-out failed")
        finally:
            self._goodbye()
            self._selector.close()
            self._wake_r.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _take_work(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
            dirty, self._dirty = self._dirty, set()
        for reader in incoming:
            if reader.task_id not in self._readers:
                self._readers[reader.task_id] = []
                self.hub.follow_task(reader.task_id)
            self._readers[reader.task_id].append(reader)
            self._selector.register(reader.sock, selectors.EVENT_READ, reader)
        for task_id in dirty:
            self._deliver(task_id)

    def _deliver(self, task_id: str) -> None:
        """Send `task_id`'s new events to its readers: one read and one encoding per group
        of readers at the same place (usually all of them)."""
        groups: dict[int, list[_Reader]] = {}
        for reader in self._readers.get(task_id, ()):
            if not reader.ending:
                groups.setdefault(reader.last, []).append(reader)
        for last, group in groups.items():
            events = self.hub.events_after(task_id, last, BATCH)
            if not events:
                continue
            frames, newest, ending = [], last, False
            for event in events:
                frames.append(self.encode(event))
                newest = event.id
                if event.event_type in TERMINAL_EVENTS:
                    ending = True
                    break
            data = "".join(frames).encode()
            framed = {False: data, True: chunk(data) + (LAST_CHUNK if ending else b"")}
            for reader in group:
                reader.last = newest
                reader.ending = ending
                self._send(reader, framed[reader.chunked])
            if not ending:
                # the window or a batch may end before the newest event: look again (once
                # caught up, the window answers "nothing newer" without a store read)
                with self._lock:
                    self._dirty.add(task_id)

    def _send(self, reader: _Reader, data: bytes) -> None:
        if reader.sock is None:
            return
        if len(reader.out) > BUFFER_LIMIT:
            # what was queued before is still not sent: this client reads slower than events come
            log.info("stream of %s cut off: %d bytes wait for the client", reader.task_id, len(reader.out))
            self._drop(reader)
            return
        reader.out += data
        self._flush(reader)

    def _flush(self, reader: _Reader) -> None:
        try:
            while reader.out:
                sent = reader.sock.send(reader.out)
                del reader.out[:sent]
                reader.written_at = time.monotonic()
        except BlockingIOError:
            pass
        except OSError:
            self._drop(reader)  # the client went away
            return
        if not reader.out:
            if reader.ending:
                self._drop(reader)
            elif reader.writing:
                reader.writing = False
                self._selector.modify(reader.sock, selectors.EVENT_READ, reader)
        elif not reader.writing:
            reader.writing = True
            self._selector.modify(reader.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, reader)

    def _readable(self, reader: _Reader) -> None:
        """A client says nothing on an SSE stream: readable means it closed (or sent
        something we ignore)."""
        try:
            if reader.sock.recv(4096):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._drop(reader)

    def _keepalives(self) -> None:
        now = time.monotonic()
        self._next_keepalive_check = now + min(1.0, self.keepalive)
        comment = b": keep-alive\n\n"
        for readers in list(self._readers.values()):
            for reader in list(readers):
                if not reader.out and not reader.ending and now - reader.written_at >= self.keepalive:
                    self._send(reader, chunk(comment) if reader.chunked else comment)

    def _drop(self, reader: _Reader) -> None:
        if reader.sock is None:
            return
        try:
            self._selector.unregister(reader.sock)
        except (KeyError, ValueError):
            pass
        reader.sock.close()
        reader.sock = None
        readers = self._readers.get(reader.task_id, [])
        if reader in readers:
            readers.remove(reader)
        if not readers and reader.task_id in self._readers:
            del self._readers[reader.task_id]
            with self._lock:
                self._followed.discard(reader.task_id)
            self.hub.unfollow_task(reader.task_id)
        self.hub.leave(reader.task_id)
        self.hub.stream_closed(holds_thread=False)

    def _goodbye(self) -> None:
        """The worker is stopping: every reader is told to reconnect (to another worker)."""
        self._take_work()
        readers = [r for rs in self._readers.values() for r in rs]
        for reader in readers:
            if not reader.ending:
                frame = reconnect_frame(reader.last)
                reader.out += (chunk(frame) + LAST_CHUNK) if reader.chunked else frame
                reader.ending = True
            self._flush(reader)
        deadline = time.monotonic() + STOP_FLUSH_SECONDS
        while any(r.sock is not None for r in readers) and time.monotonic() < deadline:
            for key, mask in self._selector.select(max(0.0, deadline - time.monotonic())):
                if key.data is None:
                    self._drain_wake()
                elif key.data.sock is not None:
                    if mask & selectors.EVENT_WRITE:
                        self._flush(key.data)
                    elif mask & selectors.EVENT_READ:
                        self._readable(key.data)
        for reader in readers:
            self._drop(reader)
