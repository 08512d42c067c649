"""The streaming bridge: wakes request threads that wait for a task's next event.

Events are written to the store by whichever worker runs the task, so a stream served by
another worker must learn of them from the store. One poller thread per worker asks the
store for the newest event id of every task someone here is waiting on (one query per
tick for all of them) and wakes those waiters; events written by this worker wake their
waiters at once through `notify`."""

from __future__ import annotations

import logging
import threading
import time

from .metrics import STREAMS
from .store import Store

log = logging.getLogger(__name__)


class _Watch:
    __slots__ = ("cond", "last", "waiters")

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.last = 0
        self.waiters = 0


class StreamHub:
    def __init__(self, store: Store, poll_interval: float = 0.1):
        self.store = store
        self.poll_interval = poll_interval
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._streams = 0

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._poll, name="stream-hub", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def active_streams(self) -> int:
        return self._streams

    def stream_opened(self) -> None:
        with self._lock:
            self._streams += 1
        STREAMS.inc()

    def stream_closed(self) -> None:
        with self._lock:
            self._streams -= 1
        STREAMS.dec()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait(self, task_id: str, after: int, timeout: float) -> bool:
        """Block until the task has an event newer than `after`, or `timeout` passes, or the
        hub stops. True when there is something new to read."""
        with self._lock:
            watch = self._watches.setdefault(task_id, _Watch())
            watch.waiters += 1
        self._wake.set()
        try:
            with watch.cond:
                return watch.cond.wait_for(lambda: watch.last > after or self.stopping, timeout) and not self.stopping
        finally:
            with self._lock:
                watch.waiters -= 1
                if watch.waiters == 0:
                    self._watches.pop(task_id, None)

    def notify(self, task_id: str, event_id: int) -> None:
        with self._lock:
            watch = self._watches.get(task_id)
        if watch is not None:
            with watch.cond:
                if event_id > watch.last:
                    watch.last = event_id
                    watch.cond.notify_all()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                task_ids = list(self._watches)
            if not task_ids:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                latest = self.store.last_event_ids(task_ids)
            except Exception:  # noqa: BLE001 - a store hiccup must not kill the poller
                log.warning("stream hub poll failed", exc_info=True)
                latest = {}
            for task_id, event_id in latest.items():
                self.notify(task_id, event_id)
            time.sleep(self.poll_interval)
        with self._lock:
            watches = list(self._watches.values())
        for watch in watches:
            with watch.cond:
                watch.cond.notify_all()
