"""SQLite store: one file in WAL mode, shared by every worker process of one host."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from orchestration.sqlite_pool import ConnectionPool

from . import Event, EventWrite, Store, TaskRecord, decode_cursor, dumps, encode_cursor, loads, pack, unpack

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    orchestrator TEXT NOT NULL,
    query TEXT NOT NULL,
    title TEXT,
    params TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    worker TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT
);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (status, lease_expires) WHERE status IN ('pending', 'running');
CREATE TABLE IF NOT EXISTS events (
    task_id TEXT NOT NULL,
    id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    timestamp REAL NOT NULL,
    agent_id TEXT,
    progress REAL,
    data TEXT NOT NULL,
    PRIMARY KEY (task_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    task_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (task_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workers (
    worker TEXT PRIMARY KEY,
    info TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session_calls (
    session_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    task_id TEXT,
    cancelled INTEGER NOT NULL DEFAULT 0,
    expires REAL NOT NULL,
    PRIMARY KEY (session_id, request_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS session_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS session_messages_by_session ON session_messages (session_id, id);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    task_id TEXT,
    secret TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_by_owner ON webhooks (owner, task_id);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (webhook_id, task_id, event_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    owner TEXT NOT NULL,
    reason TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS reports (
    task_id TEXT NOT NULL,
    format TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (task_id, format)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

TASK_COLUMNS = (
    "task_id, orchestrator, query, title, params, owner, status, created_at, started_at, completed_at, "
    "progress, error, worker, lease_owner, lease_expires, cancel_requested, attempts"
)
CLAIMABLE = "status IN ('pending', 'running') AND (lease_owner IS NULL OR lease_expires < ?)"
FINISHED = "status IN ('completed', 'failed', 'cancelled')"
# design: checkpoints exist to resume a running task. A completed or cancelled one is never
# resumed, so its checkpoints go in the transaction that records its end; a failed task
# keeps them, since a retry resumes from them, until retention removes it.
CHECKPOINTS_DROPPED_ON = ("completed", "cancelled")
SESSION_MESSAGE_TTL = 3600
# design: below this much free disk the store reports itself nearly full (/health degrades):
# enough for a WAL checkpoint and a few thousand tasks, so the operator hears before writes fail
MIN_FREE_DISK = 128 * 1024 * 1024
VACUUM_PAGES = 4096
WAL_SIZE_LIMIT = 8 * 1024 * 1024
AUTO_VACUUM_MODES = {0: "none", 1: "full", 2: "incremental"}
# tables whose rows belong to one task, removed with it
TASK_TABLES = ("events", "checkpoints", "deliveries", "reports")
# connections a process keeps open to the database, shared by all its threads (orchestration.sqlite_pool)
POOL_SIZE = 8



def newest_first_filter(equal: dict[str, Any], cursor: str | None, id_column: str) -> tuple[str, list[Any]]:
    """The WHERE clause and its arguments of a page ordered by (created_at, id) newest first:
    columns equal to the values given (None: any), after `cursor` when one is given."""
    clauses, args = [], []
    for column, value in equal.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            args.append(value)
    if cursor:
        created, last_id = decode_cursor(cursor)
        clauses.append(f"(created_at < ? OR (created_at = ? AND {id_column} < ?))")
        args += [created, created, last_id]
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args

class SQLiteStore(Store):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # design: the threads of a process share a few connections (orchestration.sqlite_pool)
        self._pool = ConnectionPool(self._open, POOL_SIZE)
        self._wal = False  # a connection in WAL mode was opened (here or in a parent process)
        # design: writers take turns on a thread lock, then on an flock of a file beside the
        # database, before asking SQLite for its write lock. SQLite's busy handler waits by
        # sleeping (up to 100 ms a nap), so dozens of threads in several workers contending
        # through it stalled event writes for half a second; both these locks hand over the
        # moment they are released. The lock file is opened per process (an flock taken
        # through a descriptor inherited across fork would be shared, not exclusive).
        self._write_lock = threading.RLock()
        self._lock_path = self.path.with_name(self.path.name + ".writelock")
        self._lock_file: Any = None
        self._lock_pid = 0
        self._lock_depth = 0
        with self._writer_turn(), self._pool.connection() as db:
            db.executescript(SCHEMA)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.split("://", 1)[1]
        # sqlite:///abs/path -> /abs/path ; sqlite:///./rel -> ./rel
        return cls(path[1:] if path.startswith("/./") else path)

    def _open(self) -> sqlite3.Connection:
        # design: the first opening takes the writer turn too. Switching a new
        # file to WAL needs the database to itself and SQLite answers "database is locked"
        # at once rather than waiting, so workers booting together on a fresh DATA_DIR
        # failed now and then (and gunicorn stopped the service when a worker could not
        # boot). Once the file is in WAL mode (WAL is stored in the file), later connections,
        # a forked child's too, open without the turn (issue 19).
        with self._writer_turn() if not self._wal else nullcontext():
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            # design: incremental auto-vacuum lets the retention sweep hand freed pages
            # back to the file system a batch at a time. SQLite takes it only on a new,
            # empty file (before WAL is switched on), so a database made by an older
            # release keeps its mode until an operator runs VACUUM (docs/configuration.md).
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # a checkpointed WAL is cut back to this size instead of keeping its peak forever
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            db.execute("PRAGMA busy_timeout=30000")
            self._wal = True
        return db

    def _rows(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self._pool.connection() as db:
            return db.execute(sql, params).fetchall()

    def _row(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        with self._pool.connection() as db:
            return db.execute(sql, params).fetchone()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # the writer turn first: a thread holds a pooled connection only while it can use it
        with self._writer_turn(), self._pool.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """The writer turn: this process's thread lock, then the flock shared with the other
        processes. Reentrant within a thread."""
        with self._write_lock:
            if self._lock_pid != os.getpid():
                self._lock_file = open(self._lock_path, "a+b")  # noqa: SIM115 - kept for the process's life
                self._lock_pid, self._lock_depth = os.getpid(), 0
            self._lock_depth += 1
            if self._lock_depth == 1:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def ping(self) -> None:
        self._rows("SELECT 1 FROM tasks LIMIT 1")

    def close(self) -> None:
        self._pool.close()

    # -- tasks ------------------------------------------------------------------------

    def create_task(self, task: TaskRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * 17)})",
                (task.task_id, task.orchestrator, task.query, task.title, dumps(task.params), task.owner,
                 task.status, task.created_at, task.started_at, task.completed_at, task.progress, task.error,
                 task.worker, task.lease_owner, task.lease_expires, int(task.cancel_requested), task.attempts),
            )

    @staticmethod
    def _task(row: sqlite3.Row | None) -> TaskRecord | None:
        if row is None:
            return None
        values = dict(row)
        values.pop("result", None)
        values["params"] = loads(values["params"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        return TaskRecord(**values)

    def get_task(self, task_id: str) -> TaskRecord | None:
        row = self._row(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
        return self._task(row)

    def list_tasks(self, owner=None, status=None, orchestrator=None, limit=50, cursor=None):
        where, args = newest_first_filter({"owner": owner, "status": status, "orchestrator": orchestrator},
                                          cursor, "task_id")
        rows = self._rows(
            f"SELECT {TASK_COLUMNS} FROM tasks {where} ORDER BY created_at DESC, task_id DESC LIMIT ?",
            (*args, limit + 1),
        )
        tasks = [self._task(r) for r in rows[:limit]]
        next_cursor = encode_cursor(tasks[-1].created_at, tasks[-1].task_id) if len(rows) > limit else None
        return tasks, next_cursor

    def count_tasks_by_status(self) -> dict[str, int]:
        rows = self._rows("SELECT status, COUNT(*) FROM tasks GROUP BY status")
        return {status: count for status, count in rows}

    # -- leases -------------------------------------------------------------------------

    def claim_task(self, task_id: str, worker: str, ttl: float) -> TaskRecord | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                f"UPDATE tasks SET status = 'running', lease_owner = ?, lease_expires = ?, worker = ?, "
                f"started_at = COALESCE(started_at, ?), attempts = attempts + 1 "
                f"WHERE task_id = ? AND {CLAIMABLE} RETURNING {TASK_COLUMNS}",
                (worker, now + ttl, worker, now, task_id, now),
            ).fetchone()
        return self._task(row)

    def renew_lease(self, task_id: str, worker: str, ttl: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tasks SET lease_expires = ? WHERE task_id = ? AND lease_owner = ? AND status = 'running'",
                (time.time() + ttl, task_id, worker),
            )
            return cur.rowcount == 1

    def release_lease(self, task_id: str, worker: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL WHERE task_id = ? AND lease_owner = ?",
                (task_id, worker),
            )

    def claimable_tasks(self, limit: int) -> list[str]:
        rows = self._rows(
            f"SELECT task_id FROM tasks WHERE {CLAIMABLE} ORDER BY created_at LIMIT ?", (time.time(), limit)
        )
        return [r[0] for r in rows]

    def finish_task(self, task_id, worker, status, result, error, event_type, event_data):
        guard = "lease_owner = ?" if worker else "status = 'pending' AND lease_owner IS NULL"
        args = (worker,) if worker else ()
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE tasks SET status = ?, result = ?, error = ?, completed_at = ?, lease_owner = NULL, "
                f"lease_expires = NULL, progress = CASE WHEN ? = 'completed' THEN 100 ELSE progress END "
                f"WHERE task_id = ? AND status IN ('pending', 'running') AND {guard}",
                (status, pack(result), error, now, status, task_id, *args),
            )
            if cur.rowcount != 1:
                return None
            event_id = self._insert_event(db, task_id, event_type, now, None, None, event_data)
            if status in CHECKPOINTS_DROPPED_ON:
                db.execute("DELETE FROM checkpoints WHERE task_id = ?", (task_id,))
        return Event(event_id, event_type, task_id, now, event_data)

    # -- cancel -------------------------------------------------------------------------

    def request_cancel(self, task_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE tasks SET cancel_requested = 1 WHERE task_id = ?", (task_id,))

    def cancel_requested(self, task_ids: list[str]) -> set[str]:
        if not task_ids:
            return set()
        rows = self._rows(
            f"SELECT task_id FROM tasks WHERE cancel_requested = 1 AND task_id IN ({','.join('?' * len(task_ids))})",
            task_ids,
        )
        return {r[0] for r in rows}

    # -- events -------------------------------------------------------------------------

    def append_event(self, task_id, event_type, data, agent_id=None, progress=None, worker=None):
        now = time.time()
        with self._tx() as db:
            if worker and db.execute(
                "SELECT 1 FROM tasks WHERE task_id = ? AND lease_owner = ? AND status = 'running'", (task_id, worker)
            ).fetchone() is None:
                return None
            event_id = self._insert_event(db, task_id, event_type, now, agent_id, progress, data)
            if progress is not None:
                db.execute("UPDATE tasks SET progress = ? WHERE task_id = ?", (progress, task_id))
        return Event(event_id, event_type, task_id, now, data, agent_id, progress)

    def append_events(self, batch: list[EventWrite]) -> list[Event | BaseException | None]:
        """The whole batch in one write transaction (one turn on the write locks instead of
        one per event); if it fails, each item is tried on its own so one bad item fails alone."""
        try:
            encoded = [(item, dumps(item[2])) for item in batch]
            now = time.time()
            out: list[Event | BaseException | None] = []
            with self._tx() as db:
                leased: dict[tuple[str, str], bool] = {}
                for (task_id, event_type, data, agent_id, progress, worker, at), text in encoded:
                    if worker:
                        key = (task_id, worker)
                        if key not in leased:
                            leased[key] = db.execute(
                                "SELECT 1 FROM tasks WHERE task_id = ? AND lease_owner = ? AND status = 'running'",
                                (task_id, worker)).fetchone() is not None
                        if not leased[key]:
                            out.append(None)
                            continue
                    at = at or now
                    event_id = self._insert_encoded(db, task_id, event_type, at, agent_id, progress, text)
                    if progress is not None:
                        db.execute("UPDATE tasks SET progress = ? WHERE task_id = ?", (progress, task_id))
                    out.append(Event(event_id, event_type, task_id, at, data, agent_id, progress))
            return out
        except Exception:  # noqa: BLE001 - isolate the failing item below
            return super().append_events(batch)

    @staticmethod
    def _insert_event(db, task_id, event_type, now, agent_id, progress, data) -> int:
        return SQLiteStore._insert_encoded(db, task_id, event_type, now, agent_id, progress, dumps(data))

    @staticmethod
    def _insert_encoded(db, task_id, event_type, now, agent_id, progress, text) -> int:
        """Insert with the task's next id; the caller holds the write lock (BEGIN IMMEDIATE)."""
        return db.execute(
            "INSERT INTO events (task_id, id, event_type, timestamp, agent_id, progress, data) "
            "SELECT ?, COALESCE(MAX(id), 0) + 1, ?, ?, ?, ?, ? FROM events WHERE task_id = ? RETURNING id",
            (task_id, event_type, now, agent_id, progress, text, task_id),
        ).fetchone()[0]

    def events(self, task_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = self._rows(
            "SELECT id, event_type, task_id, timestamp, data, agent_id, progress FROM events "
            "WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?",
            (task_id, after, limit),
        )
        return [Event(r[0], r[1], r[2], r[3], loads(r[4]), r[5], r[6]) for r in rows]

    def last_event_ids(self, task_ids: list[str]) -> dict[str, int]:
        if not task_ids:
            return {}
        rows = self._rows(
            f"SELECT task_id, MAX(id) FROM events WHERE task_id IN ({','.join('?' * len(task_ids))}) "
            "GROUP BY task_id",
            task_ids,
        )
        return {r[0]: r[1] for r in rows}

    # -- checkpoints and results ----------------------------------------------------------

    def save_checkpoint(self, task_id: str, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (task_id, key, value) VALUES (?, ?, ?)",
                (task_id, key, dumps(value)),
            )

    def save_checkpoints(self, batch: list[tuple[str, dict[str, Any]]]) -> list[BaseException | None]:
        """The whole batch in one write transaction; if it fails, each item on its own."""
        try:
            rows = [(task_id, key, dumps(value)) for task_id, values in batch for key, value in values.items()]
            with self._tx() as db:
                db.executemany("INSERT OR REPLACE INTO checkpoints (task_id, key, value) VALUES (?, ?, ?)", rows)
            return [None] * len(batch)
        except Exception:  # noqa: BLE001 - isolate the failing item below
            return super().save_checkpoints(batch)

    def load_checkpoints(self, task_id: str) -> dict[str, Any]:
        rows = self._rows("SELECT key, value FROM checkpoints WHERE task_id = ?", (task_id,))
        return {r[0]: loads(r[1]) for r in rows}

    def get_result(self, task_id: str) -> dict[str, Any] | None:
        row = self._row("SELECT result FROM tasks WHERE task_id = ?", (task_id,))
        return unpack(row[0]) if row and row[0] else None

    # -- workers --------------------------------------------------------------------------

    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO workers (worker, info, expires) VALUES (?, ?, ?)",
                       (worker, dumps(info), now + ttl))
            db.execute("DELETE FROM workers WHERE expires < ?", (now - 3600,))

    def forget_worker(self, worker: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM workers WHERE worker = ?", (worker,))

    def live_workers(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT worker, info FROM workers WHERE expires >= ?", (time.time(),))
        return [{"worker": r[0], **loads(r[1])} for r in rows]

    def count_webhooks(self) -> int:
        return self._row("SELECT COUNT(*) FROM webhooks")[0]

    # -- response cache ----------------------------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        row = self._row("SELECT value FROM cache WHERE key = ? AND expires >= ?",
                               (key, time.time()))
        return row[0] if row else None

    def cache_set(self, key: str, value: str, ttl: float) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO cache (key, value, expires) VALUES (?, ?, ?)", (key, value, now + ttl))
            db.execute("DELETE FROM cache WHERE expires < ?", (now,))

    # -- report documents ---------------------------------------------------------------------

    def get_report(self, task_id: str, fmt: str) -> bytes | None:
        row = self._row("SELECT body FROM reports WHERE task_id = ? AND format = ?", (task_id, fmt))
        return bytes(row[0]) if row else None

    def save_report(self, task_id: str, fmt: str, body: bytes) -> bytes:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO reports (task_id, format, body, created_at) VALUES (?, ?, ?, ?)",
                       (task_id, fmt, body, time.time()))
            row = db.execute("SELECT body FROM reports WHERE task_id = ? AND format = ?", (task_id, fmt)).fetchone()
        return bytes(row[0])

    def cache_add(self, key: str, value: str, ttl: float) -> bool:
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM cache WHERE key = ? AND expires < ?", (key, now))
            return db.execute("INSERT OR IGNORE INTO cache (key, value, expires) VALUES (?, ?, ?)",
                              (key, value, now + ttl)).rowcount == 1

    def cache_take(self, key: str) -> str | None:
        with self._tx() as db:
            row = db.execute("DELETE FROM cache WHERE key = ? RETURNING value, expires", (key,)).fetchone()
        return row[0] if row and row[1] >= time.time() else None

    # -- MCP sessions ----------------------------------------------------------------------

    def save_session(self, session_id: str, data: dict[str, Any], ttl: float, create: bool = True) -> bool:
        now = time.time()
        with self._tx() as db:
            if create:
                db.execute("INSERT OR REPLACE INTO sessions (session_id, data, expires) VALUES (?, ?, ?)",
                           (session_id, dumps(data), now + ttl))
                written = True
            else:
                written = db.execute("UPDATE sessions SET data = ?, expires = ? WHERE session_id = ? AND expires >= ?",
                                     (dumps(data), now + ttl, session_id, now)).rowcount == 1
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            db.execute("DELETE FROM session_calls WHERE expires < ?", (now,))
            return written

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        row = self._row("SELECT data FROM sessions WHERE session_id = ? AND expires >= ?",
                               (session_id, time.time()))
        return loads(row[0]) if row else None

    def delete_session(self, session_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM session_messages WHERE session_id = ?", (session_id,))
            db.execute("DELETE FROM session_calls WHERE session_id = ?", (session_id,))
            return db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,)).rowcount == 1

    def record_session_call(self, session_id: str, request_id: str, ttl: float, task_id: str | None = None,
                            cancelled: bool = False) -> tuple[str | None, bool]:
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO session_calls (session_id, request_id, task_id, cancelled, expires) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (session_id, request_id) DO UPDATE SET task_id = COALESCE(excluded.task_id, task_id), "
                "cancelled = MAX(cancelled, excluded.cancelled), expires = excluded.expires "
                "RETURNING task_id, cancelled",
                (session_id, request_id, task_id, int(cancelled), time.time() + ttl)).fetchone()
            return row[0], bool(row[1])

    def session_call(self, session_id: str, request_id: str) -> tuple[str | None, bool]:
        row = self._row("SELECT task_id, cancelled FROM session_calls WHERE session_id = ? AND request_id = ?",
                               (session_id, request_id))
        return (row[0], bool(row[1])) if row else (None, False)

    def push_session_message(self, session_id: str, message: dict[str, Any]) -> int:
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM session_messages WHERE created_at < ?", (now - SESSION_MESSAGE_TTL,))
            return db.execute("INSERT INTO session_messages (session_id, message, created_at) VALUES (?, ?, ?) "
                              "RETURNING id", (session_id, dumps(message), now)).fetchone()[0]

    def session_messages(self, session_id: str, after: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self._rows("SELECT id, message FROM session_messages WHERE session_id = ? AND id > ? "
                                "ORDER BY id", (session_id, after))
        return [(r[0], loads(r[1])) for r in rows]

    # -- rate-limit counters ---------------------------------------------------------------

    def incr_counter(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        now = time.time()
        with self._tx() as db:
            value, expires = db.execute(
                "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = CASE WHEN expires < ? THEN excluded.value ELSE value + excluded.value END, "
                "expires = CASE WHEN expires < ? THEN excluded.expires ELSE expires END RETURNING value, expires",
                (key, amount, now + expiry, now, now),
            ).fetchone()
        return value, expires

    def get_counter(self, key: str) -> tuple[int, float]:
        now = time.time()
        row = self._row("SELECT value, expires FROM counters WHERE key = ? AND expires >= ?",
                               (key, now))
        return (row[0], row[1]) if row else (0, now)

    def reset_counters(self, prefix: str = "") -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM counters WHERE key LIKE ? ESCAPE '\\'",
                              (prefix.replace("%", "\\%").replace("_", "\\_") + "%",)).rowcount

    # -- webhooks ------------------------------------------------------------------------

    @staticmethod
    def _hook(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        hook = dict(row)
        hook["events"] = loads(hook["events"])
        return hook

    def create_webhook(self, hook: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO webhooks (id, owner, url, events, task_id, secret, created_at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (hook["id"], hook["owner"], hook["url"], dumps(hook["events"]), hook.get("task_id"),
                        hook["secret"], hook["created_at"]))

    def get_webhook(self, webhook_id: str) -> dict[str, Any] | None:
        return self._hook(self._row("SELECT * FROM webhooks WHERE id = ?", (webhook_id,)))

    def list_webhooks(self, owner: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM webhooks WHERE owner = ? ORDER BY created_at", (owner,))
        return [self._hook(r) for r in rows]

    def delete_webhook(self, webhook_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,)).rowcount == 1

    def webhooks_for(self, owner: str, task_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM webhooks WHERE owner = ? AND (task_id IS NULL OR task_id = ?)",
                                (owner, task_id))
        return [self._hook(r) for r in rows]

    def enqueue_delivery(self, delivery: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO deliveries (id, webhook_id, task_id, event_id, event_type, payload, "
                       "status, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                       (delivery["id"], delivery["webhook_id"], delivery["task_id"], delivery["event_id"],
                        delivery["event_type"], delivery["payload"], delivery["next_attempt_at"],
                        delivery["created_at"]))

    def due_deliveries(self, limit: int) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ? "
                                "ORDER BY next_attempt_at LIMIT ?", (time.time(), limit))
        return [dict(r) for r in rows]

    def update_delivery(self, delivery_id: str, **fields: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(f"UPDATE deliveries SET {columns} WHERE id = ?", (*fields.values(), delivery_id))

    def deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM deliveries WHERE webhook_id = ? ORDER BY created_at DESC LIMIT ?",
                                (webhook_id, limit))
        return [dict(r) for r in rows]

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        row = self._row("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return dict(row) if row else None

    def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO locks (name, owner, expires) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "owner = excluded.owner, expires = excluded.expires WHERE locks.expires < ? OR locks.owner = ? "
                "RETURNING owner", (name, owner, now + ttl, now, owner)).fetchone()
        return row is not None

    # -- dead letter ------------------------------------------------------------------------

    def add_dead_letter(self, entry: dict[str, Any]) -> bool:
        with self._tx() as db:
            known = db.execute("SELECT 1 FROM dead_letters WHERE id = ?", (entry["id"],)).fetchone() is not None
            db.execute("INSERT OR REPLACE INTO dead_letters (id, kind, ref, owner, reason, error, created_at, attempts) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (entry["id"], entry["kind"], entry["ref"], entry["owner"], entry["reason"], entry.get("error"),
                        entry["created_at"], entry.get("attempts", 0)))
        return not known

    def get_dead_letter(self, entry_id: str) -> dict[str, Any] | None:
        row = self._row("SELECT * FROM dead_letters WHERE id = ?", (entry_id,))
        return dict(row) if row else None

    def list_dead_letters(self, owner=None, kind=None, limit=50, cursor=None):
        where, args = newest_first_filter({"owner": owner, "kind": kind}, cursor, "id")
        rows = [dict(r) for r in self._rows(
            f"SELECT * FROM dead_letters {where} ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit + 1))]
        page = rows[:limit]
        return page, (encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None)

    def delete_dead_letter(self, entry_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM dead_letters WHERE id = ?", (entry_id,)).rowcount == 1

    def count_dead_letters(self) -> int:
        return self._row("SELECT COUNT(*) FROM dead_letters")[0]

    def reopen_task(self, task_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM reports WHERE task_id = ? AND EXISTS (SELECT 1 FROM tasks WHERE task_id = ? "
                       "AND status = 'failed')", (task_id, task_id))  # the documents of the failure
            return db.execute(
                "UPDATE tasks SET status = 'pending', error = NULL, completed_at = NULL, started_at = NULL, "
                "result = NULL, attempts = 0, cancel_requested = 0, lease_owner = NULL, lease_expires = NULL "
                "WHERE task_id = ? AND status = 'failed'", (task_id,)).rowcount == 1

    # -- retention --------------------------------------------------------------------------

    def sweep(self, finished_before: float | None, max_tasks_per_key: int, limit: int) -> dict[str, int]:
        removed: dict[str, int] = {}
        doomed: list[str] = []
        if finished_before is not None:
            doomed += [r[0] for r in self._rows(
                f"SELECT task_id FROM tasks WHERE {FINISHED} AND completed_at < ? ORDER BY completed_at LIMIT ?",
                (finished_before, limit))]
        if max_tasks_per_key > 0 and len(doomed) < limit:
            doomed += [r[0] for r in self._rows(
                f"SELECT task_id FROM (SELECT task_id, ROW_NUMBER() OVER (PARTITION BY owner "
                f"ORDER BY created_at DESC, task_id DESC) AS newer FROM tasks WHERE {FINISHED}) "
                f"WHERE newer > ? LIMIT ?", (max_tasks_per_key, limit - len(doomed)))]
        doomed = list(dict.fromkeys(doomed))
        now = time.time()
        with self._tx() as db:
            if doomed:
                marks = ",".join("?" * len(doomed))
                removed["dead_letters"] = db.execute(
                    f"DELETE FROM dead_letters WHERE (kind = 'task' AND ref IN ({marks})) OR (kind = 'webhook' AND "
                    f"ref IN (SELECT id FROM deliveries WHERE task_id IN ({marks})))", doomed * 2).rowcount
                for table in TASK_TABLES:
                    removed[table] = db.execute(f"DELETE FROM {table} WHERE task_id IN ({marks})", doomed).rowcount
                # a task finished meanwhile elsewhere is fine; one resumed (status running) is kept
                removed["tasks"] = db.execute(f"DELETE FROM tasks WHERE task_id IN ({marks}) AND {FINISHED}",
                                              doomed).rowcount
            else:
                removed["tasks"] = 0
            removed["sessions"] = db.execute("DELETE FROM sessions WHERE expires < ?", (now,)).rowcount
            removed["session_messages"] = db.execute(
                "DELETE FROM session_messages WHERE created_at < ? OR session_id NOT IN "
                "(SELECT session_id FROM sessions)", (now - SESSION_MESSAGE_TTL,)).rowcount
            for table in ("cache", "counters", "locks"):
                removed[table] = db.execute(f"DELETE FROM {table} WHERE expires < ?", (now,)).rowcount
            removed["workers"] = db.execute("DELETE FROM workers WHERE expires < ?", (now - 3600,)).rowcount
        with self._writer_turn(), self._pool.connection() as db:
            # hands freed pages back to the file system (a no-op unless auto_vacuum is incremental)
            # (executescript steps the pragma to its end; execute would free a single page)
            db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return removed

    def size(self) -> dict[str, Any]:
        with self._pool.connection() as db:
            page_size, pages, free, vacuum = (db.execute(f"PRAGMA {name}").fetchone()[0] for name in (
                "page_size", "page_count", "freelist_count", "auto_vacuum"))
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        on_disk = sum(f.stat().st_size for f in files if f.exists())
        usage = shutil.disk_usage(self.path.parent)
        return {"backend": "sqlite", "bytes": (pages - free) * page_size, "database_bytes": pages * page_size,
                "file_bytes": on_disk,
                "free_pages": free, "auto_vacuum": AUTO_VACUUM_MODES.get(vacuum),
                "disk_free_bytes": usage.free, "disk_total_bytes": usage.total,
                # design: SQLite grows until the disk is full; its limit is what the disk has left
                "limit_bytes": on_disk + usage.free, "nearly_full": usage.free < MIN_FREE_DISK}

    def table_rows(self) -> dict[str, int]:
        """Rows per table (a full count each: for the sweep's metrics, not for requests)."""
        return {t: self._row(f"SELECT COUNT(*) FROM {t}")[0]
                for t in ("tasks", "events", "checkpoints", "deliveries", "sessions", "session_messages", "cache",
                          "counters", "webhooks", "dead_letters")}
