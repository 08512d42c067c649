"""A few SQLite connections shared by all the threads of a process.

design: a connection per thread cost each process about 0.2-0.3 MB per thread that ever
touched the database (its statement cache and page cache), and a gunicorn worker serving
150 dashboards' streams runs 150 threads (issue 19: workers over 120 MB). A pool keeps at
most `size` connections per process. A thread holds one for a statement or a transaction,
never while it waits on anything but SQLite, so a thread waiting for one waits for a
statement's time. A forked child opens its own (a connection must not cross a fork).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .forks import generation


class ConnectionPool:
    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int, wait: float = 60.0) -> None:
        self.connect, self.size, self.wait = connect, size, wait
        self._held = threading.local()  # the connection this thread holds, for reentrant use
        self._lock = threading.Lock()
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._forks, self.open = generation(), 0  # a pool made in a parent starts afresh in a child

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection this thread holds until the block ends; inside a block, the same one
        (a read inside a transaction uses the transaction's connection)."""
        forks = generation()
        held = getattr(self._held, "conn", None)
        if held is not None and self._held.forks == forks:
            yield held
            return
        if self._forks != forks:
            with self._lock:
                if self._forks != forks:
                    self._idle, self._forks, self.open = queue.LifoQueue(), forks, 0
        idle = self._idle
        try:
            conn = idle.get_nowait()
        except queue.Empty:
            conn = self._grow_or_wait(idle)
        self._held.conn, self._held.forks = conn, forks
        try:
            yield conn
        finally:
            self._held.conn = None
            idle.put(conn)

    def _grow_or_wait(self, idle: queue.LifoQueue[sqlite3.Connection]) -> sqlite3.Connection:
        with self._lock:
            grow = self.open < self.size
            self.open += grow
        if not grow:
            try:
                return idle.get(timeout=self.wait)
            except queue.Empty:
                raise sqlite3.OperationalError(
                    f"no SQLite connection free in {self.wait:.0f} s ({self.size} in use)") from None
        try:
            return self.connect()
        except BaseException:
            with self._lock:
                self.open -= 1
            raise

    def close(self) -> None:
        """Close the connections this process has open and not lent out."""
        if self._forks != generation():
            return
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return
            conn.close()
            with self._lock:
                self.open -= 1
