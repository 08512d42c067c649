"""Redis store: one Redis shared by every worker of every host (DESIGN §3, issue 9).

Tasks are hashes, each task's event log a Redis Stream whose entry ids are `0-<n>` so the
stream id is the event id; leases, fencing and the terminal transition are Lua scripts, so
each is one atomic step. Key names are constants of this class (CONVENTIONS 6)."""

from __future__ import annotations

import base64
import time
from typing import Any

import redis

from . import (Event, EventWrite, Store, TaskRecord, dead_letter_id, decode_cursor, dumps, encode_cursor, loads, pack,
               unpack)

FENCE = """
local status = redis.call('HGET', KEYS[1], 'status')
if ARGV[1] ~= '' then
  if status ~= 'running' or redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[1] then return nil end
end
"""
APPEND = FENCE + """
local n = redis.call('HINCRBY', KEYS[1], 'last_event_id', 1)
redis.call('XADD', KEYS[2], '0-' .. n, 'event_type', ARGV[2], 'timestamp', ARGV[3], 'agent_id', ARGV[4],
           'progress', ARGV[5], 'data', ARGV[6])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'progress', ARGV[5]) end
return n
"""
CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'running' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local expires = tonumber(redis.call('HGET', KEYS[1], 'lease_expires') or '0') or 0
local now = tonumber(ARGV[2])
if owner and owner ~= '' and expires >= now then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_owner', ARGV[1], 'worker', ARGV[1],
           'lease_expires', tostring(now + tonumber(ARGV[3])))
if (redis.call('HGET', KEYS[1], 'started_at') or '') == '' then redis.call('HSET', KEYS[1], 'started_at', ARGV[2]) end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return 1
"""
RENEW = """
if redis.call('HGET', KEYS[1], 'status') == 'running' and redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_expires', ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease_owner', '', 'lease_expires', '')
end
return 1
"""
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'pending' and status ~= 'running' then return nil end
local owner = redis.call('HGET', KEYS[1], 'lease_owner') or ''
if ARGV[1] ~= '' then
  if owner ~= ARGV[1] then return nil end
elseif status ~= 'pending' or owner ~= '' then return nil end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'error', ARGV[3], 'completed_at', ARGV[4], 'lease_owner', '',
           'lease_expires', '')
if ARGV[2] == 'completed' then redis.call('HSET', KEYS[1], 'progress', '100') end
redis.call('SET', KEYS[3], ARGV[5])
redis.call('SREM', KEYS[4], ARGV[8])
if ARGV[2] ~= 'failed' then redis.call('DEL', KEYS[5]) end
local n = redis.call('HINCRBY', KEYS[1], 'last_event_id', 1)
redis.call('XADD', KEYS[2], '0-' .. n, 'event_type', ARGV[6], 'timestamp', ARGV[4], 'agent_id', '',
           'progress', '', 'data', ARGV[7])
return n
"""
REOPEN = """
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'error', '', 'completed_at', '', 'started_at', '', 'attempts', '0',
           'cancel_requested', '0', 'lease_owner', '', 'lease_expires', '')
redis.call('DEL', KEYS[2], KEYS[4])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""
INCR_COUNTER = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if value == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {value, redis.call('PTTL', KEYS[1])}
"""
LOCK = """
local owner = redis.call('GET', KEYS[1])
if not owner or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


FINISHED = ("completed", "failed", "cancelled")
# design: Redis refuses writes at maxmemory (noeviction) or evicts our state (other policies);
# /health degrades at this share of it, while there is still room to act
NEARLY_FULL = 0.9


class RedisStore(Store):
    unavailable_errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    TASK_KEY = "orch:task:{}"
    EVENTS_KEY = "orch:events:{}"
    RESULT_KEY = "orch:result:{}"
    CHECKPOINTS_KEY = "orch:checkpoints:{}"
    TASKS_KEY = "orch:tasks"  # zset of every task by created_at
    OWNER_TASKS_KEY = "orch:tasks:owner:{}"
    OPEN_KEY = "orch:tasks:open"  # set of pending and running tasks
    WORKER_KEY = "orch:worker:{}"
    SESSION_KEY = "orch:session:{}"
    SESSION_MESSAGES_KEY = "orch:session-messages:{}"
    # one hash per session: fields task:<request id> and cancelled:<request id>
    SESSION_CALLS_KEY = "orch:session-calls:{}"
    COUNTER_KEY = "orch:counter:{}"
    WEBHOOK_KEY = "orch:webhook:{}"
    OWNER_WEBHOOKS_KEY = "orch:webhooks:owner:{}"
    DELIVERY_KEY = "orch:delivery:{}"
    DUE_KEY = "orch:deliveries:due"
    WEBHOOK_DELIVERIES_KEY = "orch:deliveries:webhook:{}"
    DELIVERY_DEDUPE_KEY = "orch:deliveries:seen"
    TASK_DELIVERIES_KEY = "orch:deliveries:task:{}"
    DEAD_LETTER_KEY = "orch:dead-letter:{}"
    DEAD_LETTERS_KEY = "orch:dead-letters"  # zset of every entry by created_at
    OWNER_DEAD_LETTERS_KEY = "orch:dead-letters:owner:{}"
    REPORT_KEY = "orch:report:{}"  # hash: format -> base64 of the document
    #: keys that belong to one task and go with it (CONVENTIONS 6)
    TASK_OWNED_KEYS = (TASK_KEY, EVENTS_KEY, RESULT_KEY, CHECKPOINTS_KEY, TASK_DELIVERIES_KEY, REPORT_KEY)
    #: how many of the oldest tasks one sweep looks at per batch it may remove
    SWEEP_SCAN_FACTOR = 5
    LOCK_KEY = "orch:lock:{}"
    CACHE_KEY = "orch:cache:{}"

    def __init__(self, client: redis.Redis):
        self.r = client
        self._append = client.register_script(APPEND)
        self._claim = client.register_script(CLAIM)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._finish = client.register_script(FINISH)
        self._incr = client.register_script(INCR_COUNTER)
        self._lock = client.register_script(LOCK)
        self._reopen = client.register_script(REOPEN)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5,
                                        health_check_interval=30, retry_on_timeout=True))

    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        self.r.close()

    # -- tasks ------------------------------------------------------------------------------

    def create_task(self, task: TaskRecord) -> None:
        fields = {
            "task_id": task.task_id, "orchestrator": task.orchestrator, "query": task.query,
            "title": task.title if task.title is not None else "", "has_title": int(task.title is not None),
            "params": dumps(task.params), "owner": task.owner, "status": task.status,
            "created_at": repr(task.created_at), "started_at": "", "completed_at": "", "progress": "0",
            "error": "", "worker": "", "lease_owner": "", "lease_expires": "", "cancel_requested": "0",
            "attempts": "0", "last_event_id": "0",
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.TASK_KEY.format(task.task_id), mapping=fields)
        pipe.zadd(self.TASKS_KEY, {task.task_id: task.created_at})
        pipe.zadd(self.OWNER_TASKS_KEY.format(task.owner), {task.task_id: task.created_at})
        pipe.sadd(self.OPEN_KEY, task.task_id)
        pipe.execute()

    @staticmethod
    def _task(raw: dict[str, str]) -> TaskRecord | None:
        if not raw:
            return None

        def number(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return TaskRecord(
            task_id=raw["task_id"], orchestrator=raw["orchestrator"], query=raw["query"],
            title=raw["title"] if raw.get("has_title") == "1" else None, params=loads(raw["params"]),
            owner=raw["owner"], status=raw["status"], created_at=float(raw["created_at"]),
            started_at=number("started_at"), completed_at=number("completed_at"),
            progress=float(raw.get("progress") or 0), error=raw.get("error") or None,
            worker=raw.get("worker") or None, lease_owner=raw.get("lease_owner") or None,
            lease_expires=number("lease_expires"), cancel_requested=raw.get("cancel_requested") == "1",
            attempts=int(raw.get("attempts") or 0),
        )

    def get_task(self, task_id: str) -> TaskRecord | None:
        return self._task(self.r.hgetall(self.TASK_KEY.format(task_id)))

    def list_tasks(self, owner=None, status=None, orchestrator=None, limit=50, cursor=None):
        key = self.OWNER_TASKS_KEY.format(owner) if owner is not None else self.TASKS_KEY
        start_score, start_id = decode_cursor(cursor) if cursor else (float("inf"), None)
        found: list[TaskRecord] = []
        offset, batch = 0, max(limit * 2, 50)
        while len(found) <= limit:
            page = self.r.zrevrangebyscore(key, start_score, "-inf", start=offset, num=batch, withscores=True)
            if not page:
                break
            offset += len(page)
            ordered = sorted(page, key=lambda item: (-item[1], [-ord(c) for c in item[0]]))
            pipe = self.r.pipeline(transaction=False)
            for task_id, _ in ordered:
                pipe.hgetall(self.TASK_KEY.format(task_id))
            for (task_id, score), raw in zip(ordered, pipe.execute()):
                if start_id is not None and score == start_score and task_id >= start_id:
                    continue
                task = self._task(raw)
                if task and (status is None or task.status == status) and (
                        orchestrator is None or task.orchestrator == orchestrator):
                    found.append(task)
        tasks = found[:limit]
        next_cursor = encode_cursor(tasks[-1].created_at, tasks[-1].task_id) if len(found) > limit else None
        return tasks, next_cursor

    def count_tasks_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        task_ids = self.r.zrange(self.TASKS_KEY, 0, -1)
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.TASK_KEY.format(task_id), "status")
        for status in pipe.execute():
            if status:
                counts[status] = counts.get(status, 0) + 1
        return counts

    # -- leases -------------------------------------------------------------------------------

    def claim_task(self, task_id: str, worker: str, ttl: float) -> TaskRecord | None:
        if not self._claim(keys=[self.TASK_KEY.format(task_id)], args=[worker, repr(time.time()), ttl]):
            return None
        return self.get_task(task_id)

    def renew_lease(self, task_id: str, worker: str, ttl: float) -> bool:
        return bool(self._renew(keys=[self.TASK_KEY.format(task_id)], args=[worker, repr(time.time() + ttl)]))

    def release_lease(self, task_id: str, worker: str) -> None:
        self._release(keys=[self.TASK_KEY.format(task_id)], args=[worker])

    def claimable_tasks(self, limit: int) -> list[str]:
        now = time.time()
        task_ids = sorted(self.r.smembers(self.OPEN_KEY))
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(self.TASK_KEY.format(task_id), "status", "lease_owner", "lease_expires", "created_at")
        ready = []
        for task_id, (status, owner, expires, created) in zip(task_ids, pipe.execute()):
            if status in ("pending", "running") and (not owner or float(expires or 0) < now):
                ready.append((float(created or 0), task_id))
        return [task_id for _, task_id in sorted(ready)[:limit]]

    def finish_task(self, task_id, worker, status, result, error, event_type, event_data):
        now = repr(time.time())
        event_id = self._finish(
            keys=[self.TASK_KEY.format(task_id), self.EVENTS_KEY.format(task_id), self.RESULT_KEY.format(task_id),
                  self.OPEN_KEY, self.CHECKPOINTS_KEY.format(task_id)],
            args=[worker or "", status, error or "", now, pack(result), event_type, dumps(event_data), task_id])
        if event_id is None:
            return None
        return Event(int(event_id), event_type, task_id, float(now), event_data)

    # -- cancel -------------------------------------------------------------------------------

    def request_cancel(self, task_id: str) -> None:
        if self.r.exists(self.TASK_KEY.format(task_id)):
            self.r.hset(self.TASK_KEY.format(task_id), "cancel_requested", "1")

    def cancel_requested(self, task_ids: list[str]) -> set[str]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.TASK_KEY.format(task_id), "cancel_requested")
        return {t for t, flag in zip(task_ids, pipe.execute()) if flag == "1"}

    # -- events -------------------------------------------------------------------------------

    def append_event(self, task_id, event_type, data, agent_id=None, progress=None, worker=None):
        now = time.time()
        event_id = self._append(
            keys=[self.TASK_KEY.format(task_id), self.EVENTS_KEY.format(task_id)],
            args=[worker or "", event_type, repr(now), agent_id or "", "" if progress is None else repr(progress),
                  dumps(data)])
        if event_id is None:
            return None
        return Event(int(event_id), event_type, task_id, now, data, agent_id, progress)

    def append_events(self, batch: list[EventWrite]) -> list[Event | BaseException | None]:
        """The batch in one round trip (a pipeline of the append script), each item fenced
        and numbered by the script as `append_event` does."""
        prepared: list[tuple[Any, ...] | BaseException] = []
        pipe = self.r.pipeline(transaction=False)
        for task_id, event_type, data, agent_id, progress, worker, at in batch:
            try:
                text = dumps(data)
            except Exception as exc:  # noqa: BLE001 - this item fails alone
                prepared.append(exc)
                continue
            now = at or time.time()
            self._append(keys=[self.TASK_KEY.format(task_id), self.EVENTS_KEY.format(task_id)],
                         args=[worker or "", event_type, repr(now), agent_id or "",
                               "" if progress is None else repr(progress), text], client=pipe)
            prepared.append((task_id, event_type, data, agent_id, progress, now))
        replies = iter(pipe.execute(raise_on_error=False) if len(pipe) else [])
        out: list[Event | BaseException | None] = []
        for item in prepared:
            if isinstance(item, BaseException):
                out.append(item)
                continue
            reply = next(replies)
            task_id, event_type, data, agent_id, progress, now = item
            if isinstance(reply, BaseException) or reply is None:
                out.append(reply)
            else:
                out.append(Event(int(reply), event_type, task_id, now, data, agent_id, progress))
        return out

    def events(self, task_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        rows = self.r.xrange(self.EVENTS_KEY.format(task_id), min=f"(0-{after}", max="+", count=limit)
        return [Event(int(entry_id.split("-")[1]), f["event_type"], task_id, float(f["timestamp"]),
                      loads(f["data"]), f["agent_id"] or None, float(f["progress"]) if f["progress"] else None)
                for entry_id, f in rows]

    def wait_for_events(self, known: dict[str, int], timeout: float) -> dict[str, int] | None:
        streams = {self.EVENTS_KEY.format(task_id): f"0-{last}" for task_id, last in known.items()}
        reply = self.r.xread(streams, block=max(1, int(timeout * 1000)), count=1) or []
        names = {name for name, _ in reply}
        grown = [task_id for task_id in known if self.EVENTS_KEY.format(task_id) in names]
        return self.last_event_ids(grown) if grown else {}

    def last_event_ids(self, task_ids: list[str]) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(self.TASK_KEY.format(task_id), "last_event_id")
        return {t: int(n) for t, n in zip(task_ids, pipe.execute()) if n and n != "0"}

    # -- checkpoints and results ------------------------------------------------------------

    def save_checkpoint(self, task_id: str, key: str, value: Any) -> None:
        self.r.hset(self.CHECKPOINTS_KEY.format(task_id), key, dumps(value))

    def save_checkpoints(self, batch: list[tuple[str, dict[str, Any]]]) -> list[BaseException | None]:
        """The batch in one round trip (a pipeline of one HSET per item)."""
        out: list[BaseException | None] = []
        pipe = self.r.pipeline(transaction=False)
        for task_id, values in batch:
            try:
                pipe.hset(self.CHECKPOINTS_KEY.format(task_id), mapping={k: dumps(v) for k, v in values.items()})
                out.append(None)
            except Exception as exc:  # noqa: BLE001 - this item fails alone
                out.append(exc)
        replies = iter(pipe.execute(raise_on_error=False) if len(pipe) else [])
        return [item if item is not None else _error_or_none(next(replies)) for item in out]

    def load_checkpoints(self, task_id: str) -> dict[str, Any]:
        return {k: loads(v) for k, v in self.r.hgetall(self.CHECKPOINTS_KEY.format(task_id)).items()}

    def get_result(self, task_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.RESULT_KEY.format(task_id))
        return unpack(raw) if raw else None

    # -- workers ------------------------------------------------------------------------------

    def heartbeat(self, worker: str, info: dict[str, Any], ttl: float) -> None:
        self.r.set(self.WORKER_KEY.format(worker), dumps(info), px=int(ttl * 1000))

    def forget_worker(self, worker: str) -> None:
        self.r.delete(self.WORKER_KEY.format(worker))

    def live_workers(self) -> list[dict[str, Any]]:
        keys = list(self.r.scan_iter(self.WORKER_KEY.format("*"), count=500))
        values = self.r.mget(keys) if keys else []
        prefix = len(self.WORKER_KEY.format(""))
        return [{"worker": k[prefix:], **loads(v)} for k, v in zip(keys, values) if v]

    # -- response cache ----------------------------------------------------------------------

    def cache_get(self, key: str) -> str | None:
        return self.r.get(self.CACHE_KEY.format(key))

    def cache_set(self, key: str, value: str, ttl: float) -> None:
        self.r.set(self.CACHE_KEY.format(key), value, px=max(1, int(ttl * 1000)))

    # -- report documents ---------------------------------------------------------------------
    # design: the client decodes replies as text, so documents are kept as base64.

    def get_report(self, task_id: str, fmt: str) -> bytes | None:
        raw = self.r.hget(self.REPORT_KEY.format(task_id), fmt)
        return base64.b64decode(raw) if raw else None

    def save_report(self, task_id: str, fmt: str, body: bytes) -> bytes:
        key = self.REPORT_KEY.format(task_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(key, fmt, base64.b64encode(body).decode("ascii"))
        pipe.hget(key, fmt)
        return base64.b64decode(pipe.execute()[1])

    def cache_add(self, key: str, value: str, ttl: float) -> bool:
        return bool(self.r.set(self.CACHE_KEY.format(key), value, px=max(1, int(ttl * 1000)), nx=True))

    def cache_take(self, key: str) -> str | None:
        return self.r.getdel(self.CACHE_KEY.format(key))

    # -- MCP sessions ----------------------------------------------------------------------

    def save_session(self, session_id: str, data: dict[str, Any], ttl: float, create: bool = True) -> bool:
        return bool(self.r.set(self.SESSION_KEY.format(session_id), dumps(data), px=int(ttl * 1000), xx=not create))

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.SESSION_KEY.format(session_id))
        return loads(raw) if raw else None

    def delete_session(self, session_id: str) -> bool:
        self.r.delete(self.SESSION_MESSAGES_KEY.format(session_id), self.SESSION_CALLS_KEY.format(session_id))
        return bool(self.r.delete(self.SESSION_KEY.format(session_id)))

    def record_session_call(self, session_id: str, request_id: str, ttl: float, task_id: str | None = None,
                            cancelled: bool = False) -> tuple[str | None, bool]:
        key = self.SESSION_CALLS_KEY.format(session_id)
        fields: dict[str, str] = {}
        if task_id is not None:
            fields[f"task:{request_id}"] = task_id
        if cancelled:
            fields[f"cancelled:{request_id}"] = "1"
        pipe = self.r.pipeline(transaction=True)
        if fields:
            pipe.hset(key, mapping=fields)
        pipe.pexpire(key, int(ttl * 1000))
        pipe.hmget(key, f"task:{request_id}", f"cancelled:{request_id}")
        task, flag = pipe.execute()[-1]
        return task, flag == "1"

    def session_call(self, session_id: str, request_id: str) -> tuple[str | None, bool]:
        task, flag = self.r.hmget(self.SESSION_CALLS_KEY.format(session_id), f"task:{request_id}",
                                  f"cancelled:{request_id}")
        return task, flag == "1"

    def push_session_message(self, session_id: str, message: dict[str, Any]) -> int:
        key = self.SESSION_MESSAGES_KEY.format(session_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(key, dumps(message))
        pipe.expire(key, 3600)
        return int(pipe.execute()[0])

    def session_messages(self, session_id: str, after: int) -> list[tuple[int, dict[str, Any]]]:
        rows = self.r.lrange(self.SESSION_MESSAGES_KEY.format(session_id), after, -1)
        return [(after + i + 1, loads(raw)) for i, raw in enumerate(rows)]

    # -- rate-limit counters ----------------------------------------------------------------

    def incr_counter(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        value, ttl = self._incr(keys=[self.COUNTER_KEY.format(key)], args=[amount, int(expiry * 1000)])
        return int(value), time.time() + max(int(ttl), 0) / 1000

    def get_counter(self, key: str) -> tuple[int, float]:
        pipe = self.r.pipeline(transaction=True)
        pipe.get(self.COUNTER_KEY.format(key))
        pipe.pttl(self.COUNTER_KEY.format(key))
        value, ttl = pipe.execute()
        now = time.time()
        return (int(value), now + max(ttl, 0) / 1000) if value else (0, now)

    def reset_counters(self, prefix: str = "") -> int:
        keys = list(self.r.scan_iter(self.COUNTER_KEY.format(prefix) + "*", count=500))
        return self.r.delete(*keys) if keys else 0

    # -- webhooks -----------------------------------------------------------------------------

    def count_webhooks(self) -> int:
        return sum(1 for _ in self.r.scan_iter(self.WEBHOOK_KEY.format("*"), count=500))

    def create_webhook(self, hook: dict[str, Any]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.WEBHOOK_KEY.format(hook["id"]), dumps(hook))
        pipe.zadd(self.OWNER_WEBHOOKS_KEY.format(hook["owner"]), {hook["id"]: hook["created_at"]})
        pipe.execute()

    def get_webhook(self, webhook_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.WEBHOOK_KEY.format(webhook_id))
        return loads(raw) if raw else None

    def list_webhooks(self, owner: str) -> list[dict[str, Any]]:
        ids = self.r.zrange(self.OWNER_WEBHOOKS_KEY.format(owner), 0, -1)
        values = self.r.mget([self.WEBHOOK_KEY.format(i) for i in ids]) if ids else []
        return [loads(v) for v in values if v]

    def delete_webhook(self, webhook_id: str) -> bool:
        hook = self.get_webhook(webhook_id)
        if hook is None:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.WEBHOOK_KEY.format(webhook_id))
        pipe.zrem(self.OWNER_WEBHOOKS_KEY.format(hook["owner"]), webhook_id)
        pipe.execute()
        return True

    def webhooks_for(self, owner: str, task_id: str) -> list[dict[str, Any]]:
        return [h for h in self.list_webhooks(owner) if h.get("task_id") in (None, task_id)]

    def enqueue_delivery(self, delivery: dict[str, Any]) -> None:
        seen = f"{delivery['webhook_id']}:{delivery['task_id']}:{delivery['event_id']}"
        if not self.r.sadd(self.DELIVERY_DEDUPE_KEY, seen):
            return
        row = {**delivery, "status": "pending", "attempts": 0, "last_status": None, "last_error": None,
               "delivered_at": None}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.DELIVERY_KEY.format(delivery["id"]), dumps(row))
        pipe.zadd(self.DUE_KEY, {delivery["id"]: delivery["next_attempt_at"]})
        pipe.zadd(self.WEBHOOK_DELIVERIES_KEY.format(delivery["webhook_id"]), {delivery["id"]: delivery["created_at"]})
        pipe.zadd(self.TASK_DELIVERIES_KEY.format(delivery["task_id"]), {delivery["id"]: delivery["created_at"]})
        pipe.execute()

    def due_deliveries(self, limit: int) -> list[dict[str, Any]]:
        ids = self.r.zrangebyscore(self.DUE_KEY, "-inf", time.time(), start=0, num=limit)
        values = self.r.mget([self.DELIVERY_KEY.format(i) for i in ids]) if ids else []
        return [loads(v) for v in values if v]

    def update_delivery(self, delivery_id: str, **fields: Any) -> None:
        raw = self.r.get(self.DELIVERY_KEY.format(delivery_id))
        if not raw:
            return
        row = {**loads(raw), **fields}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.DELIVERY_KEY.format(delivery_id), dumps(row))
        if row["status"] == "pending":
            pipe.zadd(self.DUE_KEY, {delivery_id: row["next_attempt_at"]})
        else:
            pipe.zrem(self.DUE_KEY, delivery_id)
        pipe.execute()

    def deliveries(self, webhook_id: str, limit: int = 100) -> list[dict[str, Any]]:
        ids = self.r.zrevrange(self.WEBHOOK_DELIVERIES_KEY.format(webhook_id), 0, limit - 1)
        values = self.r.mget([self.DELIVERY_KEY.format(i) for i in ids]) if ids else []
        return [loads(v) for v in values if v]

    def get_delivery(self, delivery_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.DELIVERY_KEY.format(delivery_id))
        return loads(raw) if raw else None

    def try_lock(self, name: str, owner: str, ttl: float) -> bool:
        return bool(self._lock(keys=[self.LOCK_KEY.format(name)], args=[owner, int(ttl * 1000)]))

    # -- dead letter ------------------------------------------------------------------------

    def add_dead_letter(self, entry: dict[str, Any]) -> bool:
        key = self.DEAD_LETTER_KEY.format(entry["id"])
        pipe = self.r.pipeline(transaction=True)
        pipe.exists(key)
        pipe.set(key, dumps(entry))
        pipe.zadd(self.DEAD_LETTERS_KEY, {entry["id"]: entry["created_at"]})
        pipe.zadd(self.OWNER_DEAD_LETTERS_KEY.format(entry["owner"]), {entry["id"]: entry["created_at"]})
        return not pipe.execute()[0]

    def get_dead_letter(self, entry_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.DEAD_LETTER_KEY.format(entry_id))
        return loads(raw) if raw else None

    def list_dead_letters(self, owner=None, kind=None, limit=50, cursor=None):
        key = self.OWNER_DEAD_LETTERS_KEY.format(owner) if owner is not None else self.DEAD_LETTERS_KEY
        start_score, start_id = decode_cursor(cursor) if cursor else (float("inf"), None)
        found: list[dict[str, Any]] = []
        offset = 0
        while len(found) <= limit:
            page = self.r.zrevrangebyscore(key, start_score, "-inf", start=offset, num=max(limit * 2, 50),
                                           withscores=True)
            if not page:
                break
            offset += len(page)
            ordered = sorted(page, key=lambda item: (-item[1], [-ord(c) for c in item[0]]))
            values = self.r.mget([self.DEAD_LETTER_KEY.format(i) for i, _ in ordered])
            for (entry_id, score), raw in zip(ordered, values):
                if not raw or (start_id is not None and score == start_score and entry_id >= start_id):
                    continue
                entry = loads(raw)
                if kind is None or entry["kind"] == kind:
                    found.append(entry)
        page = found[:limit]
        return page, (encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(found) > limit else None)

    def delete_dead_letter(self, entry_id: str) -> bool:
        entry = self.get_dead_letter(entry_id)
        if entry is None:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.DEAD_LETTER_KEY.format(entry_id))
        pipe.zrem(self.DEAD_LETTERS_KEY, entry_id)
        pipe.zrem(self.OWNER_DEAD_LETTERS_KEY.format(entry["owner"]), entry_id)
        return bool(pipe.execute()[0])

    def count_dead_letters(self) -> int:
        return self.r.zcard(self.DEAD_LETTERS_KEY)

    def reopen_task(self, task_id: str) -> bool:
        return bool(self._reopen(keys=[self.TASK_KEY.format(task_id), self.RESULT_KEY.format(task_id), self.OPEN_KEY,
                                       self.REPORT_KEY.format(task_id)], args=[task_id]))

    # -- retention --------------------------------------------------------------------------

    def sweep(self, finished_before: float | None, max_tasks_per_key: int, limit: int) -> dict[str, int]:
        doomed: dict[str, str] = {}  # task id -> owner
        if finished_before is not None:
            self._collect_old(finished_before, limit, doomed)
        if max_tasks_per_key > 0 and len(doomed) < limit:
            for key in self.r.scan_iter(self.OWNER_TASKS_KEY.format("*"), count=500):
                if self.r.zcard(key) <= max_tasks_per_key:
                    continue
                owned = self.r.zrange(key, 0, -1)  # oldest first
                rows = self._states(owned)
                finished = [t for t in reversed(owned) if rows[t][0] in FINISHED]  # newest first
                for task_id in finished[max_tasks_per_key:]:
                    if len(doomed) >= limit:
                        break
                    doomed[task_id] = rows[task_id][2]
        removed = {"tasks": 0, "deliveries": 0}
        for task_id, owner in doomed.items():
            delivery_ids = self._remove_task(task_id, owner)
            removed["deliveries"] += len(delivery_ids)
            removed["tasks"] += 1
            for kind, refs in (("task", [task_id]), ("webhook", delivery_ids)):
                for ref in refs:
                    if self.delete_dead_letter(dead_letter_id(kind, ref)):
                        removed["dead_letters"] = removed.get("dead_letters", 0) + 1
        # sessions, messages, counters, cache entries, locks and workers carry their own TTLs
        return removed

    def _states(self, task_ids: list[str]) -> dict[str, tuple[str | None, float | None, str]]:
        pipe = self.r.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(self.TASK_KEY.format(task_id), "status", "completed_at", "owner")
        return {t: (status, float(done) if done else None, owner or "")
                for t, (status, done, owner) in zip(task_ids, pipe.execute())}

    def _collect_old(self, finished_before: float, limit: int, doomed: dict[str, str]) -> None:
        # design: tasks are indexed by creation time, not end time, so the oldest few
        # batches are read and those that ended long enough ago are taken; a long task still
        # running near the head does not stop the ones behind it from going.
        scanned, window = 0, max(limit, 1) * self.SWEEP_SCAN_FACTOR
        while scanned < window and len(doomed) < limit:
            page = self.r.zrangebyscore(self.TASKS_KEY, "-inf", finished_before, start=scanned, num=limit)
            if not page:
                return
            scanned += len(page)
            for task_id, (status, done, owner) in self._states(page).items():
                if status is None:
                    doomed[task_id] = owner  # an index entry whose task is gone
                elif status in FINISHED and done is not None and done < finished_before:
                    doomed[task_id] = owner
                if len(doomed) >= limit:
                    return

    def _remove_task(self, task_id: str, owner: str) -> list[str]:
        delivery_ids = self.r.zrange(self.TASK_DELIVERIES_KEY.format(task_id), 0, -1)
        rows = self.r.mget([self.DELIVERY_KEY.format(d) for d in delivery_ids]) if delivery_ids else []
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*(key.format(task_id) for key in self.TASK_OWNED_KEYS))
        pipe.zrem(self.TASKS_KEY, task_id)
        if owner:
            pipe.zrem(self.OWNER_TASKS_KEY.format(owner), task_id)
        for delivery_id, raw in zip(delivery_ids, rows):
            pipe.delete(self.DELIVERY_KEY.format(delivery_id))
            pipe.zrem(self.DUE_KEY, delivery_id)
            if raw:
                row = loads(raw)
                pipe.zrem(self.WEBHOOK_DELIVERIES_KEY.format(row["webhook_id"]), delivery_id)
                pipe.srem(self.DELIVERY_DEDUPE_KEY, f"{row['webhook_id']}:{row['task_id']}:{row['event_id']}")
        pipe.execute()
        return delivery_ids

    def size(self) -> dict[str, Any]:
        memory = self.r.info("memory")
        limit = int(memory.get("maxmemory") or 0)
        used = int(memory["used_memory"])
        return {"backend": "redis", "bytes": used, "limit_bytes": limit or None,
                "nearly_full": bool(limit) and used >= NEARLY_FULL * limit,
                "maxmemory_policy": memory.get("maxmemory_policy"), "keys": self.r.dbsize()}

    def table_rows(self) -> dict[str, int]:
        return {"tasks": self.r.zcard(self.TASKS_KEY), "keys": self.r.dbsize()}


def _error_or_none(reply: Any) -> BaseException | None:
    return reply if isinstance(reply, BaseException) else None
