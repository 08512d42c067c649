"""The task runtime of one worker process (DESIGN §3).

Tasks are rows in the store. The worker that creates a task claims it at once when it has
room; otherwise, or when the worker holding a task dies and its lease expires, any
worker's scanner claims it. A running task's lease is renewed while it runs; its events
and checkpoints go to the store, fenced by the lease, so a worker that lost its task
cannot write into it. Cancel requests are read from the store, so a cancel sent to any
worker reaches the one running the task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from orchestration.budget import UsageMeter
from orchestration.errors import Interrupted, OrchestrationError
from orchestration.models import (
    TERMINAL_STATUSES,
    Budget,
    Outcome,
    ResearchRequest,
    SearchRequest,
    Usage,
    to_dict,
)
from orchestration.research import ResearchOrchestrator
from orchestration.search import SearchOrchestrator

from . import heap, metrics
from .bridge import WorkerLoop
from .observability import current_task_id
from .catalog import Catalog
from .deadletter import DeadLetters
from .errors import Conflict, NotFound
from .results import result_document
from .settings import Settings
from .store import Store, TaskRecord
from .streaming import StreamHub
from .webhooks import DELIVERY_TIMEOUT, Webhooks

log = logging.getLogger(__name__)

TERMINAL_EVENT = {"completed": "workflow_complete", "failed": "workflow_error", "cancelled": "workflow_cancelled"}
REQUEST_TYPES = {"research": ResearchRequest, "search": SearchRequest}
CANCEL_POLL = 0.2
HEARTBEAT_INTERVAL = 5.0
WEBHOOK_POLL = 1.0
# design: a task is not retried forever. One that crashed the runtime itself (a bug, which
# repeats) is failed after CRASH_ATTEMPTS; one whose workers keep dying under it (OOM, kill)
# after MAX_ATTEMPTS claims, counting graceful hand-backs.
CRASH_ATTEMPTS = 3
MAX_ATTEMPTS = 10
SWEEP_LOCK = "retention-sweep"
SWEEP_BATCH = 200
SWEEP_BUDGET = 10.0  # seconds one sweep may take before it leaves the rest for the next round


def failure_reason(error: str | None) -> str:
    """Why a task failed, as a dead-letter `reason`."""
    text = error or ""
    if text.startswith("timed out"):
        return "timeout"
    if text.startswith("internal error on"):
        return "crashed"
    if text.startswith("gave up after"):
        return "gave_up"
    return "error"


def new_task_id(orchestrator: str) -> str:
    """`research_<hex>` / `search_<hex>` with 96 random bits."""
    return f"{orchestrator}_{secrets.token_hex(12)}"


class TaskGone(Exception):
    """This worker no longer holds the task (lease lost or task finished elsewhere)."""


@contextlib.contextmanager
def store_reachable(store: Store) -> Iterator[None]:
    """The store being out of reach, inside a running task, is Interrupted: the orchestrator
    lets it through its agents untouched and the runtime leaves the task for resuming."""
    try:
        yield
    except store.unavailable_errors as exc:
        raise Interrupted(f"the store is unavailable: {exc}") from exc


class BatchWriter:
    """Store writes of every task this worker runs (event appends, checkpoints), written in
    batches on the worker loop: `write` takes a list of items and returns, for each, its
    result or the exception it raised.

    design: under a burst (ten tasks starting eight agents each, or twenty agents finishing
    at once) one write per event or checkpoint meant one turn on the store's write lock
    each, and with hundreds of busy threads those turns queued for half a second. Writes
    that arrive while a batch is being written wait for the next one, so a burst costs a
    few transactions; a lone write is written at once. Order is kept: a batch is written in
    arrival order, and batches one after another."""

    def __init__(self, write: Callable[[list[Any]], list[Any]]):
        self.write = write
        self._queue: list[tuple[Any, asyncio.Future]] = []
        self._writing = False

    def enqueue(self, item: Any) -> asyncio.Future:
        """Queue `item` now; the future holds its result once its batch is written. A
        cancelled waiter cancels its future only: the write, already queued, still happens."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await asyncio.to_thread(self.write, [item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every writer of the batch hears of it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._writing = False


class StoreEvents:
    """EventSink of one running task: appends to the store, fenced by this worker's lease."""

    def __init__(self, runtime: TaskRuntime, task: TaskRecord):
        self.runtime = runtime
        self.task = task
        self.task_id = task.task_id

    async def emit(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                   progress: float | None = None) -> None:
        rt = self.runtime
        with store_reachable(rt.store):
            event = await rt.writer.enqueue((self.task_id, event_type, data or {}, agent_id, progress, rt.worker_id,
                                             time.time()))
            if event is None:
                raise TaskGone(self.task_id)
            rt.hub.notify(self.task_id, event.id)
            await rt.webhooks.enqueue(self.task, event)
        metrics.record_event(event_type, data)


class StoreCheckpoints:
    """CheckpointStore of one task; the task's usage so far is saved with every checkpoint
    so a resumed task's accounts include what the interrupted run spent."""

    def __init__(self, store: Store, task_id: str, meter: UsageMeter, writer: BatchWriter):
        self.store = store
        self.task_id = task_id
        self.meter = meter
        self.writer = writer

    async def load(self) -> dict[str, Any]:
        with store_reachable(self.store):
            saved = await asyncio.to_thread(self.store.load_checkpoints, self.task_id)
        saved.pop("usage", None)
        return saved

    async def save(self, key: str, value: Any) -> None:
        # design: the value and the usage in one write, batched with the other checkpoints of
        # this worker's tasks (twenty agents finishing together: a few transactions, not 80)
        with store_reachable(self.store):
            await self.writer.enqueue((self.task_id, {key: value, "usage": to_dict(self.meter.usage)}))


class TaskRuntime:
    def __init__(self, settings: Settings, store: Store, catalog: Catalog, hub: StreamHub, loop: WorkerLoop,
                 webhooks: Webhooks, dead_letters: DeadLetters | None = None):
        self.dead_letters = dead_letters
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.hub = hub
        self.loop = loop
        self.webhooks = webhooks
        # the store's methods looked up at each write, as any other call to the store is
        self.writer = BatchWriter(lambda batch: self.store.append_events(batch))
        self.checkpoint_writer = BatchWriter(lambda batch: self.store.save_checkpoints(batch))
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._running: dict[str, asyncio.Task] = {}
        self._cancelling: set[str] = set()
        self._lost: set[str] = set()
        self._stopping = False
        self._started = False
        self._stopped: Any = None
        self.warmed: Any = None  # the warm-up's future, set by start()

    # -- lifecycle (called from any thread) -----------------------------------------------

    def start(self) -> None:
        """Start the background services of this worker once."""
        if self._started:
            return
        self._started = True
        self.hub.start()
        self.hub.publish_capacity()
        self.loop.submit(self._services())
        self.warmed = self.loop.submit(self._guarded(self.catalog.warm_up))

    def wait_warm(self, timeout: float) -> bool:
        """Wait until this worker's warm-up has ended (gunicorn's post_worker_init calls this,
        so a worker takes requests only once the first task no longer pays for it)."""
        if self.warmed is None:
            return True
        try:
            self.warmed.result(timeout)
        except Exception:  # noqa: BLE001 - a failed warm-up is logged by _guarded; a timeout is ours
            return self.warmed.done()
        return True

    def begin_stop(self) -> None:
        """Begin a graceful stop without waiting (safe in a signal handler): stream waiters
        are woken to close, running tasks are interrupted and hand back their leases."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        self.hub.stop()
        self._stopped = self.loop.submit(self._interrupt_all())

    def stop(self) -> None:
        """Graceful stop: waits until running tasks have checkpointed and released their
        leases, so another worker resumes them at once."""
        self.begin_stop()
        if self._stopped is not None:
            try:
                self._stopped.result(self.settings.graceful_timeout)
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.warning("graceful stop did not finish", exc_info=True)
        self.hub.fanout.join(self.settings.graceful_timeout)  # handed-off streams told to reconnect

    # -- request-side API (request threads) ------------------------------------------------

    def create(self, orchestrator: str, params: dict[str, Any], owner: str, task_id: str | None = None) -> TaskRecord:
        task = TaskRecord(
            task_id=task_id or new_task_id(orchestrator),
            orchestrator=orchestrator,
            query=params["query"],
            title=params.get("title"),
            params=params,
            owner=owner,
            created_at=time.time(),
        )
        self.store.create_task(task)
        self.start()
        self.loop.submit(self._try_start(task.task_id))
        return task

    def cancel(self, task: TaskRecord) -> TaskRecord:
        """Request cancellation; a task nobody runs yet is cancelled here and now."""
        if task.status in TERMINAL_STATUSES:
            raise Conflict(f"task {task.task_id} is already {task.status}", {"status": task.status})
        self.store.request_cancel(task.task_id)
        if task.status == "pending" and task.lease_owner is None:
            doc = result_document(task, "cancelled", None, time.time(), None)
            doc["partial"] = True
            event = self.store.finish_task(task.task_id, None, "cancelled", doc, None, "workflow_cancelled",
                                           {"status": "cancelled", "partial": True})
            if event:
                self.hub.notify(task.task_id, event.id)
                self.loop.submit(self.webhooks.enqueue(task, event))
        elif task.task_id in self._running:
            self.loop.call_soon(self._cancel_local, task.task_id)
        return self.store.get_task(task.task_id) or task

    def wait(self, task_id: str, timeout: float) -> TaskRecord:
        """Block until the task ends or `timeout` passes; returns its latest record."""
        deadline = time.monotonic() + timeout
        while True:
            # design: the newest id first, then the status. The terminal event and the final
            # status are written together, so either the status read sees the end, or the
            # terminal event is newer than `last` and wakes the wait below. (Read the other
            # way round, an end landing between the two reads slept out the whole wait.)
            last = self.store.last_event_ids([task_id]).get(task_id, 0)
            task = self.store.get_task(task_id)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            remaining = deadline - time.monotonic()
            if task.status in TERMINAL_STATUSES or remaining <= 0 or self.hub.stopping:
                return task
            self.hub.wait(task_id, last, min(remaining, 5.0))

    def resume(self, task_id: str) -> None:
        """Run a task made pending again (a dead-letter retry) as soon as a worker has room."""
        self.start()
        self.loop.submit(self._try_start(task_id))

    def info(self) -> dict[str, Any]:
        return {"worker": self.worker_id, "running_tasks": len(self._running), "started": self._started}

    # -- background services (worker loop) ------------------------------------------------

    async def _services(self) -> None:
        await asyncio.gather(self._scan_loop(), self._lease_loop(), self._cancel_loop(), self._heartbeat_loop(),
                             self._webhook_loop(), self._sweep_loop())

    async def _scan_loop(self) -> None:
        while not self._stopping:
            await self._guarded(self._scan_once)
            await asyncio.sleep(self.settings.task_scan_interval * random.uniform(0.75, 1.25))

    async def _scan_once(self) -> None:
        room = self.settings.max_concurrent_tasks - len(self._running)
        if room <= 0:
            return
        for task_id in await asyncio.to_thread(self.store.claimable_tasks, room):
            await self._try_start(task_id)

    async def _lease_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            for task_id in list(self._running):
                held = await self._guarded(asyncio.to_thread, self.store.renew_lease, task_id, self.worker_id,
                                           self.settings.lease_ttl)
                if held is False and task_id in self._running:
                    log.warning("lost the lease of %s; stopping it here", task_id)
                    self._lost.add(task_id)
                    self._running[task_id].cancel()

    async def _cancel_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(CANCEL_POLL)
            watched = [t for t in self._running if t not in self._cancelling]
            if watched:
                requested = await self._guarded(asyncio.to_thread, self.store.cancel_requested, watched)
                for task_id in requested or ():
                    self._cancel_local(task_id)

    async def _heartbeat_loop(self) -> None:
        metrics.CONFIGURED_WORKERS.set(self.settings.workers)

        while not self._stopping:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "running_tasks": len(self._running),
                    "active_streams": self.hub.active_streams, "stream_capacity": self.hub.capacity}
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.store.heartbeat, self.worker_id, info, HEARTBEAT_INTERVAL * 3)
                metrics.STORE_UP.set(1)
            except Exception:  # noqa: BLE001 - told by the gauge and the log; the loop goes on
                log.warning("heartbeat failed: the store is out of reach", exc_info=True)
                metrics.STORE_UP.set(0)
            metrics.STORE_LATENCY.observe(time.perf_counter() - started)  # a failed write counts with its wait
            await self._guarded(self._gauges)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _gauges(self) -> None:
        """The gauges an operator alerts on, refreshed with the heartbeat."""
        metrics.LIVE_WORKERS.set(len(await asyncio.to_thread(self.store.live_workers)))
        metrics.record_memory()
        if self.dead_letters is not None:
            await asyncio.to_thread(self.dead_letters.refresh_gauge)

    async def _webhook_loop(self) -> None:
        # design: one client for all deliveries of this worker; redirects are not followed,
        # so a receiver cannot bounce a signed event to an address the SSRF check refused.
        async with httpx.AsyncClient(timeout=DELIVERY_TIMEOUT, follow_redirects=False) as client:
            while not self._stopping:
                await self._guarded(self.webhooks.deliver_due, self.worker_id, client)
                await asyncio.sleep(WEBHOOK_POLL)

    async def _sweep_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.settings.sweep_interval * random.uniform(0.75, 1.25))
            if self._stopping:  # a stopped worker starts no sweep, however long it slept
                break
            # design: one worker of all hosts sweeps at a time (the store lock); the others
            # skip this round. The lock outlives a sweep so a second worker does not follow at once.
            if await self._guarded(asyncio.to_thread, self.store.try_lock, SWEEP_LOCK, self.worker_id,
                                   self.settings.sweep_interval):
                await self._guarded(self.sweep)

    async def sweep(self) -> dict[str, int]:
        """Remove what retention says is no longer kept, in bounded batches, each its own short
        store transaction in a thread, so requests and tasks never wait for the whole sweep."""
        retention = self.settings.task_retention_seconds
        removed: dict[str, int] = {}
        deadline = time.monotonic() + SWEEP_BUDGET
        while True:
            before = time.time() - retention if retention is not None else None
            batch = await asyncio.to_thread(self.store.sweep, before, self.settings.max_tasks_per_key, SWEEP_BATCH)
            for kind, count in batch.items():
                removed[kind] = removed.get(kind, 0) + count
            if batch.get("tasks", 0) < SWEEP_BATCH or time.monotonic() > deadline or self._stopping:
                break
            await asyncio.sleep(0)
        size = await asyncio.to_thread(self.store.size)
        rows = await asyncio.to_thread(self.store.table_rows)
        metrics.record_sweep(removed, size, rows)
        if removed.get("tasks"):
            log.info("retention sweep removed %d tasks", removed["tasks"], extra={"removed": removed})
        return removed

    async def _guarded(self, fn: Any, *args: Any) -> Any:
        """Run one step of a background service; a failing step is logged and retried next tick."""
        try:
            return await fn(*args)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - background services must outlive store hiccups
            log.warning("background step %s failed", getattr(fn, "__name__", fn), exc_info=True)
            return None

    def _cancel_local(self, task_id: str) -> None:
        task = self._running.get(task_id)
        if task is not None and task_id not in self._cancelling:
            self._cancelling.add(task_id)
            task.cancel()

    async def _interrupt_all(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.graceful_timeout)
        # a stopping worker is not a live one: /health's live_workers drops it now, not after its TTL
        await self._guarded(asyncio.to_thread, self.store.forget_worker, self.worker_id)

    # -- running one task ---------------------------------------------------------------

    async def _try_start(self, task_id: str) -> None:
        if self._stopping or task_id in self._running:
            return
        if len(self._running) >= self.settings.max_concurrent_tasks:
            return
        task = await asyncio.to_thread(self.store.claim_task, task_id, self.worker_id, self.settings.lease_ttl)
        if task is None:
            return
        self._running[task_id] = asyncio.create_task(self._run(task), name=task_id)

    async def _run(self, task: TaskRecord) -> None:
        current_task_id.set(task.task_id)
        try:
            await self._execute(task)
        except TaskGone:
            log.info("task %s was taken over or finished elsewhere", task.task_id)
        except (Interrupted, *self.store.unavailable_errors) as exc:
            # design: an outage is not the task's fault and not a crash, so it neither fails
            # the task nor counts towards CRASH_ATTEMPTS. (Failing it was the bug: an agent's
            # write failed, and the "failed" result landed because the store was back by then.)
            log.warning("task %s interrupted, the store is out of reach (%s); it resumes from its checkpoints",
                        task.task_id, exc)
            await self._guarded(self._hand_back, task, StoreEvents(self, task), "store unavailable")
        except Exception as exc:  # noqa: BLE001 - logged; the lease expires and another worker resumes
            log.exception("task %s crashed in the runtime", task.task_id)
            if task.attempts >= CRASH_ATTEMPTS:
                await self._guarded(lambda: self._finish(task, "failed", Outcome(partial=True),
                                                         f"internal error on {task.attempts} attempts: "
                                                         f"{type(exc).__name__}"))
        finally:
            self._running.pop(task.task_id, None)
            self._cancelling.discard(task.task_id)
            self._lost.discard(task.task_id)
            if not self._stopping:
                self.loop.submit(self._guarded(self._scan_once))
            if not self._running:  # the last task ended: its heap goes back (mcp.heap), off this loop
                asyncio.get_running_loop().run_in_executor(None, heap.trim)

    async def _execute(self, task: TaskRecord) -> None:
        if task.attempts > MAX_ATTEMPTS:
            await self._finish(task, "failed", Outcome(partial=True),
                               f"gave up after {MAX_ATTEMPTS} attempts whose workers stopped before it finished")
            return
        params = task.params
        events = StoreEvents(self, task)
        saved = await asyncio.to_thread(self.store.load_checkpoints, task.task_id)
        meter = UsageMeter(Budget(params.get("max_cost_usd"), params.get("max_tokens")), self.catalog.prices,
                           Usage.from_dict(saved.get("usage")))
        last = (await asyncio.to_thread(self.store.last_event_ids, [task.task_id])).get(task.task_id, 0)
        if last:
            previous = await asyncio.to_thread(self.store.events, task.task_id, last - 1, 1)
            retried = previous[0].event_type in TERMINAL_EVENT.values()  # a dead-letter retry of a failed task
            if previous[0].event_type != "workflow_interrupted" and not retried:
                await events.emit("workflow_interrupted", {"reason": "lease expired", "attempt": task.attempts})
            await events.emit("workflow_resumed", {"worker": self.worker_id, "attempt": task.attempts,
                                                   "checkpoints": sorted(k for k in saved if k != "usage"),
                                                   **({"retry": True} if retried else {})})
        checkpoints = StoreCheckpoints(self.store, task.task_id, meter, self.checkpoint_writer)
        orchestrator: Any = None
        provider = None
        outcome = Outcome()
        error: str | None = None
        remaining = params["timeout"] - (time.time() - (task.started_at or time.time()))
        try:
            provider = self.catalog.provider(params["provider"], params.get("model"))
            sources = self.catalog.select_sources(params.get("sources"))
            kind = ResearchOrchestrator if task.orchestrator == "research" else SearchOrchestrator
            orchestrator = kind(provider, sources, events, checkpoints, meter, **self._reader_for(kind))
            request_type = REQUEST_TYPES[task.orchestrator]
            request = request_type(**{k: v for k, v in params.items() if k in request_type.__dataclass_fields__})
            async with asyncio.timeout(max(0.0, remaining)):
                outcome = await orchestrator.run(request)
            status = "completed"
        except asyncio.CancelledError:
            if task.task_id in self._lost:
                raise TaskGone(task.task_id) from None
            if self._stopping:
                await self._hand_back(task, events, "worker shutting down")
                return
            status, outcome = "cancelled", self._partial(orchestrator, None)
        except TimeoutError:
            error = f"timed out after {params['timeout']:g} s"
            status, outcome = "failed", self._partial(orchestrator, error)
        except (TaskGone, Interrupted, *self.store.unavailable_errors):
            raise  # an outage: _run hands the task back to be resumed
        except OrchestrationError as exc:
            error = str(exc)
            status, outcome = "failed", self._partial(orchestrator, error)
        except Exception as exc:  # noqa: BLE001 - a bug fails this task (logged), not the worker
            log.exception("task %s failed with an unexpected error", task.task_id)
            error = f"internal error ({type(exc).__name__})"
            status, outcome = "failed", self._partial(orchestrator, error)
        finally:
            if provider is not None:
                await provider.aclose()
        await self._finish(task, status, outcome, error)

    def _reader_for(self, kind: type) -> dict[str, Any]:
        """Research agents read their best web results through fetch_url's page reader."""
        if kind is not ResearchOrchestrator or self.settings.agent_read_pages <= 0:
            return {}
        fetcher = self.catalog.fetcher()

        async def read_page(url: str) -> str:
            return (await fetcher.fetch(url)).text

        return {"read_page": read_page, "pages_per_agent": self.settings.agent_read_pages}

    @staticmethod
    def _partial(orchestrator: Any, error: str | None) -> Outcome:
        if orchestrator is None or orchestrator.request is None:
            return Outcome(partial=True, error=error)
        return orchestrator.partial_outcome(error)

    async def _hand_back(self, task: TaskRecord, events: StoreEvents, reason: str) -> None:
        """Record the interruption and release the lease, so another worker resumes the task
        from its checkpoints at once instead of after the lease expires."""
        try:
            await events.emit("workflow_interrupted", {"reason": reason, "worker": self.worker_id})
        finally:
            await asyncio.to_thread(self.store.release_lease, task.task_id, self.worker_id)

    async def _finish(self, task: TaskRecord, status: str, outcome: Outcome, error: str | None) -> None:
        completed_at = time.time()
        doc = result_document(task, status, outcome, completed_at, error)
        summary = {"status": status, "partial": doc["partial"], "execution_time": doc["execution_time"],
                   "usage": {k: doc["usage"][k] for k in ("llm_calls", "input_tokens", "output_tokens", "cost_usd")},
                   "sources": len(doc["sources"])}
        if doc["error"]:
            summary["error"] = doc["error"]
        event = await asyncio.to_thread(self.store.finish_task, task.task_id, self.worker_id, status, doc,
                                        doc["error"], TERMINAL_EVENT[status], summary)
        if event is None:
            raise TaskGone(task.task_id)
        self.hub.notify(task.task_id, event.id)
        await self.webhooks.enqueue(task, event)
        self.webhooks.forget(task.task_id)
        metrics.record_task(task.orchestrator, status, doc["execution_time"], doc["usage"], doc["agent_results"])
        if status == "failed" and self.dead_letters is not None:
            await self._guarded(asyncio.to_thread, self.dead_letters.record, "task", task.task_id, task.owner,
                                failure_reason(doc["error"]), doc["error"], task.attempts)
        log.info("task %s %s in %.2fs", task.task_id, status, doc["execution_time"],
                 extra={"task_id": task.task_id})
