"""The streaming bridge: wakes request threads that wait for a task's next event.

Events are written to the store by whichever worker runs the task, so a stream served by
another worker must learn of them from the store. One poller thread per worker asks the
store for the newest event id of every task someone here is waiting on (one query per
tick for all of them) and wakes those waiters; events written by this worker wake their
waiters at once through `notify`.

Streams of the same task share what they read: the first reader to wake fetches the new
events from the store once and keeps them in a short per-task window, and the other
readers of that task on this worker take them from there. Five hundred readers on ten
tasks cost ten store reads per new event, not five hundred.

Admission (DESIGN §13 "Streams capacity"): a stream served from a generator holds a
request thread, so a worker whose threads were all streams could not answer anything else,
not even `/health` or the 503 that would send a reader elsewhere. Every stream takes a
stream slot and a thread slot first (`admit`); a worker has `THREADS -
STREAM_RESERVE_THREADS` slots (and at most `MAX_STREAMS`), so `STREAM_RESERVE_THREADS`
threads are always left for ordinary requests and a worker never holds more streams than
that, whatever kind (DESIGN §13). Under gunicorn a task stream that has caught up hands its
connection to the worker's fan-out thread (mcp/fanout.py) and gives its request thread
back (`enable_handoff`): it keeps its stream slot, so the count is the same, but its thread
no longer wakes for every event. The legacy /sse, MCP progress streams and servers other
than gunicorn keep their thread for the whole stream."""

from __future__ import annotations

import logging
import threading
import time

from collections import OrderedDict

from . import jsonio
from .fanout import FanOut
from .metrics import STREAM_CAPACITY, STREAMS, STREAMS_REFUSED
from .store import Event, Store

log = logging.getLogger(__name__)


# How long one blocking wait on the store lasts; streams opened meanwhile join the next one.
BLOCK_SECONDS = 0.25


class _Watch:
    __slots__ = ("cond", "last", "waiters")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.last = 0
        self.waiters = 0


class _Window:
    """Recent events of one task, contiguous by id, shared by its readers on this worker."""

    __slots__ = ("lock", "events", "readers", "latest")
    SIZE = 2000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.readers = 0
        self.latest = 0  # the newest id this worker has heard of (notify, poller, reads)


_encoded: OrderedDict[tuple[str, int], str] = OrderedDict()
_encoded_lock = threading.Lock()
ENCODED_CACHE = 4096


def sse_event(event: Event) -> str:
    """The SSE frame of an event. An event never changes once written, and every reader of a
    task on this worker sends the same frames, so each is encoded once, not once per reader."""
    key = (event.task_id, event.id)
    with _encoded_lock:
        frame = _encoded.get(key)
    if frame is None:
        frame = f"id: {event.id}\nevent: {event.event_type}\ndata: {jsonio.dumps(event.to_dict())}\n\n"
        with _encoded_lock:
            _encoded[key] = frame
            if len(_encoded) > ENCODED_CACHE:
                _encoded.popitem(last=False)
    return frame


def stream_capacity(threads: int, reserve: int, max_streams: int) -> int:
    """Streams one worker may hold while each holds a thread: its threads less the reserve,
    and at most MAX_STREAMS."""
    return max(0, min(threads - reserve, max_streams))


class StreamHub:
    def __init__(self, store: Store, poll_interval: float = 0.05, capacity: int = 1_000_000,
                 max_streams: int | None = None, keepalive: float = 15.0):
        self.store = store
        # Stream slots; thread slots: streams holding a request thread. Both are `capacity`
        # (DESIGN §13); a handed-off task stream keeps its stream slot and frees its thread.
        self.capacity = capacity
        self.thread_capacity = capacity
        self.max_streams = capacity if max_streams is None else max_streams
        self.poll_interval = poll_interval
        self.fanout = FanOut(self, sse_event, keepalive)
        self.handoff = False
        self._threads = 0
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._streams = 0
        self._windows: dict[str, _Window] = {}

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._poll, name="stream-hub", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.fanout.stop()

    def enable_handoff(self) -> None:
        """Serving under gunicorn: task streams may hand their connection to the fan-out
        thread once caught up. The capacity stays `min(THREADS - STREAM_RESERVE_THREADS,
        MAX_STREAMS)` streams per worker (DESIGN §13); what changes is that a handed-off
        stream no longer holds a request thread."""
        with self._lock:
            self.handoff = True
        self.publish_capacity()

    @property
    def active_streams(self) -> int:
        return self._streams

    def publish_capacity(self) -> None:
        """Make this worker's capacity visible in /metrics (summed over live workers)."""
        STREAM_CAPACITY.set(self.capacity)

    def admit(self) -> bool:
        """Take a stream slot and a thread slot, or False when this worker holds `capacity`
        streams, or `thread_capacity` streams holding a thread, already. The caller owns
        the slots and gives them back with `stream_closed` (the thread slot alone with
        `hand_off`)."""
        with self._lock:
            refused = self._streams >= self.capacity or self._threads >= self.thread_capacity
            if not refused:
                self._streams += 1
                self._threads += 1
        if refused:
            STREAMS_REFUSED.inc()
            return False
        STREAMS.inc()
        return True

    def stream_closed(self, holds_thread: bool = True) -> None:
        with self._lock:
            self._streams -= 1
            if holds_thread:
                self._threads -= 1
        STREAMS.dec()

    def hand_off(self, sock, task_id: str, last: int, chunked: bool) -> None:
        """A task stream's connection goes to the fan-out thread: its request thread (and
        thread slot) is free; its stream slot and its place in the task's window go along."""
        with self._lock:
            self._threads -= 1
        self.fanout.adopt(sock, task_id, last, chunked)

    def join(self, task_id: str) -> None:
        """A reader of `task_id` starts: it shares the task's window with the others here."""
        with self._lock:
            self._windows.setdefault(task_id, _Window()).readers += 1

    def leave(self, task_id: str) -> None:
        with self._lock:
            window = self._windows.get(task_id)
            if window is not None:
                window.readers -= 1
                if window.readers <= 0:
                    del self._windows[task_id]

    def events_after(self, task_id: str, after: int, limit: int = 500) -> list[Event]:
        """Events of `task_id` newer than `after`, oldest first, at most `limit`: from the
        shared window when it holds them, else from the store (once for all readers)."""
        with self._lock:
            window = self._windows.get(task_id)
        if window is None:
            return self.store.events(task_id, after, limit)
        with window.lock:
            events = window.events
            if events and events[0].id <= after + 1 <= events[-1].id:
                start = after + 1 - events[0].id
                return events[start:start + limit]
            if events and after + 1 < events[0].id:
                return self.store.events(task_id, after, limit)  # a replay from before the window
            if events and after >= events[-1].id >= window.latest:
                # Nothing newer is known: the reader goes on to `wait`, which the poller
                # or `notify` wakes when something lands.
                return []
            # design: the window ends at or before `after`; one reader asks the store while
            # the others of this task wait on the lock and then find the answer here.
            fresh = self.store.events(task_id, max(after, events[-1].id if events else after), limit)
            if fresh and (not events or fresh[0].id == events[-1].id + 1):
                window.events = (events + fresh)[-_Window.SIZE:]
            elif fresh:
                window.events = fresh[-_Window.SIZE:]
            if fresh:
                window.latest = max(window.latest, fresh[-1].id)
            return [e for e in fresh if e.id > after][:limit]

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def follow_task(self, task_id: str) -> _Watch:
        """Someone here waits for `task_id`'s events: the poller asks the store about it."""
        with self._lock:
            watch = self._watches.setdefault(task_id, _Watch())
            watch.waiters += 1
        self._wake.set()
        return watch

    def unfollow_task(self, task_id: str) -> None:
        with self._lock:
            watch = self._watches.get(task_id)
            if watch is not None:
                watch.waiters -= 1
                if watch.waiters == 0:
                    self._watches.pop(task_id, None)

    def wait(self, task_id: str, after: int, timeout: float) -> bool:
        """Block until the task has an event newer than `after`, or `timeout` passes, or the
        hub stops. True when there is something new to read."""
        watch = self.follow_task(task_id)
        try:
            with watch.cond:
                return watch.cond.wait_for(lambda: watch.last > after or self.stopping, timeout) and not self.stopping
        finally:
            self.unfollow_task(task_id)

    def notify(self, task_id: str, event_id: int) -> None:
        with self._lock:
            watch = self._watches.get(task_id)
            window = self._windows.get(task_id)
        if window is not None and event_id > window.latest:
            window.latest = event_id
        if watch is not None:
            with watch.cond:
                fresh = event_id > watch.last
                if fresh:
                    watch.last = event_id
                    watch.cond.notify_all()
            if fresh:
                # the poller repeats the newest id every tick: only news wakes the fan-out
                self.fanout.notify(task_id)

    def _poll(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                known = {task_id: watch.last for task_id, watch in self._watches.items()}
            if not known:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                # design: a store that can block until a stream grows (Redis XREAD) wakes us the
                # moment an event lands anywhere; the others are asked every poll_interval.
                latest = self.store.wait_for_events(known, BLOCK_SECONDS)
                if latest is None:
                    latest = self.store.last_event_ids(list(known))
                    time.sleep(self.poll_interval)
            except Exception:  # noqa: BLE001 - a store hiccup must not kill the poller
                log.warning("stream hub poll failed", exc_info=True)
                latest = {}
                time.sleep(1.0)  # the store is down or failing: try again, without flooding the log
            for task_id, event_id in latest.items():
                self.notify(task_id, event_id)
        with self._lock:
            watches = list(self._watches.values())
        for watch in watches:
            with watch.cond:
                watch.cond.notify_all()
