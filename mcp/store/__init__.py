"""The store: every piece of state that all workers (and hosts) must see (DESIGN §3).

`Store` is the small interface; backends are one module each, registered by URL scheme
and imported lazily (CONVENTIONS 5): `sqlite:///path` (mcp.store.sqlite) and
`redis://host:port/db` (mcp.store.redis)."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import zlib
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from .. import jsonio

BACKENDS = {"sqlite": "mcp.store.sqlite:SQLiteStore", "redis": "mcp.store.redis:RedisStore"}


@dataclass
class TaskRecord:
    task_id: str
    orchestrator: str
    query: str
    title: str | None
    params: dict[str, Any]
    owner: str = "anonymous"
    status: str = "pending"
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    progress: float = 0.0
    error: str | None = None
    worker: str | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    cancel_requested: bool = False
    attempts: int = 0


@dataclass
class Event:
    id: int
    event_type: str
    task_id: str
    timestamp: float
    data: dict[str, Any] = field(default_factory=dict)
    agent_id: str | None = None
    progress: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.agent_id is None:
            del out["agent_id"]
        if self.progress is None:
            del out["progress"]
        return out


# (task_id, event_type, data, agent_id, progress, worker, timestamp): one append_event's
# arguments, and when the event happened (None: when it is written)
EventWrite = tuple[str, str, dict[str, Any], str | None, float | None, str | None, float | None]


def dumps(value: Any) -> str:
    return jsonio.dumps(value)


def loads(text: str | bytes) -> Any:
    """JSON the store wrote back into values. design: orjson reads it several times faster
    than the standard library (a session on every MCP request, events for every stream);
    text it refuses (NaN, written by an older release's encoder) is read the old way."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# design: a result document repeats itself by nature (agent findings quote the passages the
# sources list holds, syntheses quote the findings): 40-100 KB of JSON that zlib brings to a
# tenth. Stored compressed, it keeps the document's shape for every reader; text with this
# prefix (base64, so Redis' text replies and SQLite's TEXT column carry it) is compressed,
# anything else is a plain JSON result written by an older release.
PACKED_PREFIX = "z1:"


def pack(value: Any) -> str:
    """A JSON value as compact text for the store."""
    return PACKED_PREFIX + base64.b64encode(zlib.compress(jsonio.dumpb(value), 6)).decode()


def unpack(text: str) -> Any:
    if text.startswith(PACKED_PREFIX):
        return loads(zlib.decompress(base64.b64decode(text[len(PACKED_PREFIX):])))
    return loads(text)


def dead_letter_id(kind: str, ref: str) -> str:
    """The id of the dead-letter entry of a task or delivery: one entry per thing that failed,
    so recording the same failure twice (another worker, a crash in between) updates it."""
    return "dl_" + hashlib.sha256(f"{kind}:{ref}".encode()).hexdigest()[:24]


def encode_cursor(created_at: float, task_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{task_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raises ValueError for a cursor this store never issued."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    created, task_id = raw.split("|", 1)
    return float(created), task_id


class Store(ABC):
    """Shared state. All methods are synchronous and safe to call from any thread;
    async code reaches them through the bridge's executor."""

    #: Exceptions that mean "the backend is out of reach right now" rather than a bug: the
    #: HTTP layer answers them with 503 and a running task is interrupted, not failed.
    unavailable_errors: tuple[type[BaseException], ...] = ()

    @abstractmethod
    def ping(self) -> None:
        """Raise when the backend is unreachable."""

    # tasks
    @abstractmethod
    def create_task(self, task: TaskRecord) -> None: ...

    @abstractmethod
    def get_task(self, task_id: str) -> TaskRecord | None: ...

    @abstractmethod
    def list_tasks(
        self,
        owner: str | None = None,
        status: str | None = None,
        orchestrator: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[TaskRecord], str | None]:
        """Newest first; `cursor` continues a previous page."""

    @abstractmethod
    def count_tasks_by_status(self) -> dict[str, int]: ...

    # leases: a running task is held by one worker; an expired lease can be claimed
    @abstractmethod
    def claim_task(self, task_id: str, worker: str, ttl: float) -> TaskRecord | None:
        """Take a pending task, or a running one whose lease expired; None if not claimable."""

    @abstractmethod
    def renew_lease(self, task_id: str, worker: str, ttl: float) -> bool: ...

    @abstractmethod
    def release_lease(self, task_id: str, worker: str) -> None: ...

    @abstractmethod
    def claimable_tasks(self, limit: int) -> list[str]:
        """Pending tasks and running tasks whose lease expired, oldest first."""

    @abstractmethod
    def finish_task(
        self,
        task_id: str,
        worker: str | None,
        status: str,
        result: dict[str, Any],
        error: str | None,
        event_type: str,
        event_data: dict[str, Any],
    ) -> Event | None:
        """In one step: store the result and terminal status, append the terminal event and
        release the lease. With `worker`, only while it holds the lease of a running task;
        with None, only while the task is pending and unleased. None when refused."""

    # cancel
    @abstractmethod
    def request_cancel(self, task_id: str) -> None: ...

    @abstractmethod
    def cancel_requested(self, task_ids: list[str]) -> set[str]: ...

    # events
    @abstractmethod
    def append_event(
        self,
        task_id: str,
        event_type: str,
        data: dict[str, Any],
        agent_id: str | None = None,
        progress: float | None = None,
        worker: str | None = None,
    ) -> Event | None:
        """Append with the next id of the task (ids 1, 2, 3 ... per task). With `worker`,
        only while that worker holds the lease of the running task (else None): a worker
        that lost its task, or a write landing after the terminal event, is refused."""

    def wait_for_events(self, known: dict[str, int], timeout: float) -> dict[str, int] | None:
        """Block up to `timeout` until a task in `known` (task id -> the newest event id the
        caller has) has a newer event; the newest ids of those that do. None when this
        backend cannot block, and the caller should poll `last_event_ids` instead."""
        return None

    def append_events(self, batch: list[EventWrite]) -> list[Event | BaseException | None]:
        """Several appends at once, each as `append_event` would do it, in order; for each,
        its Event, None (refused, as `append_event`), or the exception it raised. Backends
        that can write them in one transaction or round trip override this."""
        out: list[Event | BaseException | None] = []
        for item in batch:
            try:
                out.append(self.append_event(*item[:6]))
            except Exception as exc:  # noqa: BLE001 - handed back to that item's caller
                out.append(exc)
        return out

    @abstractmethod
    def events(self, task_id: str, after: int = 0, limit: int = 1000) -> list[Event]: ...

    @abstractmethod
    def last_event_ids(self, task_ids: list[str]) -> dict[str, int]: ...

    # checkpoints and results
    @abstractmethod
    def save_checkpoint(self, task_id: str, key: str, value: Any) -> None: ...

    def save_checkpoints(self, batch: list[tuple[str, dict[str, Any]]]) -> list[BaseException | None]:
        """Several (task id, {key: value}) saves at once, in order; for each, None or the
        exception it raised. Backends that can write them in one transaction or round trip
        override this."""
        out: list[BaseException | None] = []
        for task_id, values in batch:
            try:
                for key, value in values.items():
                    self.save_checkpoint(task_id, key, value)
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - handed back to that item's caller
                out.append(exc)
        return out

    @abstractmethod
    def load_checkpoints(self, task_id: str) -> dict[str, Any]: ...

    @abstractmethod
    def get_result(self, task_id: str) -> dict[str, Any] | None: ...

    # workers
    @abstractmethod
    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None: ...

    @abstractmethod
    def live_workers(self) -> list[dict[str, Any]]: ...

    @abstractmethod
    def forget_worker(self, worker: str) -> None:
        """Remove a stopping worker's heartbeat, so live_workers does not count it until it expires."""

    @abstractmethod
    def count_webhooks(self) -> int: ...

    # webhook subscriptions and the delivery outbox
    @abstractmethod
    def create_webhook(self, hook: dict[str, Any]) -> None: ...

    @abstractmethod
    def get_webhook(self, webhook_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_webhooks(self, owner: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    def delete_webhook(self, webhook_id: str) -> bool: ...

    @abstractmethod
    def webhooks_for(self, owner: str, task_id: str) -> list[dict[str, Any]]:
        """Subscriptions of `owner` that cover `task_id` (global ones and the task's own)."""

    @abstractmethod
    def enqueue_delivery(self, delivery: dict[str, Any]) -> None:
        """Add to the outbox; a (webhook_id, task_id, event_id) already queued is ignored."""

    @abstractmethod
    def due_deliveries(self, limit: int) -> list[dict[str, Any]]: ...

    @abstractmethod
    def update_delivery(self, delivery_id: str, **fields: Any) -> None: ...

    @abstractmethod
    def deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]: ...

    @abstractmethod
    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        """Hold a named lock (taken when free, expired, or already ours); renewed by calling again."""

    # MCP sessions
    @abstractmethod
    def save_session(self, session_id: str, data: dict[str, Any], ttl: float, create: bool = True) -> bool:
        """Store the session for `ttl` seconds; with create=False only a session still
        stored is written (a request finishing after DELETE must not bring it back).
        Whether it was written."""

    @abstractmethod
    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session, or None when unknown or expired."""

    @abstractmethod
    def delete_session(self, session_id: str) -> bool:
        """Forget the session, its call records and its queued messages."""

    @abstractmethod
    def record_session_call(self, session_id: str, request_id: str, ttl: float, task_id: str | None = None,
                            cancelled: bool = False) -> tuple[str | None, bool]:
        """Atomically note, for one request of a session, the task it started and/or that the
        client cancelled it; (task id, cancelled) as recorded after this write.

        design: one record per request, merged in the store, so concurrent calls of one
        session cannot drop each other's entries, and whichever of "task started" and
        "cancelled" lands second sees the first."""

    @abstractmethod
    def session_call(self, session_id: str, request_id: str) -> tuple[str | None, bool]:
        """(task id, cancelled) recorded for one request; (None, False) when nothing is."""

    # rate-limit counters (fixed windows), shared by every worker
    @abstractmethod
    def incr_counter(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """Add to a counter that expires `expiry` seconds after its first hit; (new value,
        expires_at), so a caller needs no second round trip to learn the window."""

    @abstractmethod
    def get_counter(self, key: str) -> tuple[int, float]:
        """(value, expires_at); (0, now) when absent or expired."""

    @abstractmethod
    def reset_counters(self, prefix: str = "") -> int: ...

    # short-lived cache of search API answers, shared by every worker
    @abstractmethod
    def cache_get(self, key: str) -> str | None:
        """The cached value, or None when absent or expired."""

    @abstractmethod
    def cache_set(self, key: str, value: str, ttl: float) -> None: ...

    # report documents of finished tasks, made once per format
    @abstractmethod
    def get_report(self, task_id: str, fmt: str) -> bytes | None:
        """The stored document of `task_id` under `fmt` (its format and release), or None."""

    @abstractmethod
    def save_report(self, task_id: str, fmt: str, body: bytes) -> bytes:
        """Keep `body` unless a document of that task and format is kept already; returns
        the one kept (the first saved wins, so every worker serves the same bytes)."""

    @abstractmethod
    def cache_add(self, key: str, value: str, ttl: float) -> bool:
        """Set `key` only when it is absent or expired; True when this call set it."""

    @abstractmethod
    def cache_take(self, key: str) -> str | None:
        """Read and delete `key` at once: of concurrent takers, one gets the value (single-use codes)."""

    # legacy HTTP+SSE: messages for the worker that holds a session's stream
    @abstractmethod
    def push_session_message(self, session_id: str, message: dict[str, Any]) -> int: ...

    @abstractmethod
    def session_messages(self, session_id: str, after: int) -> list[tuple[int, dict[str, Any]]]: ...

    # dead letter (issue 16): tasks failed for good and deliveries out of retries
    @abstractmethod
    def add_dead_letter(self, entry: dict[str, Any]) -> bool:
        """Record `entry` (id, kind, ref, owner, reason, error, created_at, attempts); an
        entry with the same id is updated instead. True when it is new."""

    @abstractmethod
    def get_dead_letter(self, entry_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_dead_letters(self, owner: str | None = None, kind: str | None = None, limit: int = 50,
                          cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; `owner` None lists every owner's."""

    @abstractmethod
    def delete_dead_letter(self, entry_id: str) -> bool: ...

    @abstractmethod
    def count_dead_letters(self) -> int: ...

    @abstractmethod
    def reopen_task(self, task_id: str) -> bool:
        """Make a failed task pending again (a retry resumes it from its checkpoints);
        False when it is not failed."""

    # retention (issue 26)
    @abstractmethod
    def sweep(self, finished_before: float | None, max_tasks_per_key: int, limit: int) -> dict[str, int]:
        """Remove at most `limit` finished tasks with everything that belongs to them (events,
        result, checkpoints, deliveries, cached documents): those that ended before
        `finished_before` (None: none by age), and each owner's oldest finished tasks beyond
        its newest `max_tasks_per_key` (0: no cap). Also drop expired sessions, session
        messages, cache entries, counters and locks. Pending and running tasks are never
        touched. Counts of what was removed, by kind; `tasks` < `limit` means done for now."""

    @abstractmethod
    def size(self) -> dict[str, Any]:
        """What the store holds: `bytes` in use, `limit_bytes` it may grow to (None: no
        limit), `nearly_full` when it should be told to an operator before writes fail, and
        backend details. Cheap enough for /health."""

    def table_rows(self) -> dict[str, int]:
        """Rows (or keys) per kind of record, for metrics; may be slow, never on a request path."""
        return {}

    def close(self) -> None:
        """Release connections."""


def open_store(url: str) -> Store:
    """The backend registered for the URL's scheme."""
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        raise ValueError(f"unsupported STORE_URL scheme {scheme!r}; use one of {sorted(BACKENDS)}")
    module_name, class_name = BACKENDS[scheme].split(":")
    return getattr(importlib.import_module(module_name), class_name).from_url(url)
