"""The one place where sync Flask meets async orchestration code (CONVENTIONS 7).

Each worker process owns one `WorkerLoop`: a daemon thread running an asyncio loop for
long-running work (orchestrations, lease renewal, scans). Request threads hand work to it
with `submit` (fire and forget) or `call` (wait for the answer); short request-scoped
coroutines that need no shared loop state go through asgiref's `async_to_sync`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from asgiref.sync import async_to_sync

T = TypeVar("T")


class WorkerLoop:
    def __init__(self, name: str = "orchestrator-loop"):
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.pid = os.getpid()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> WorkerLoop:
        if self.running:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # design: blocking store calls run in this pool; sized for many agents' events.
        self.loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="store-io"))
        self._ready.set()
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the worker loop from any thread."""
        if not self.running:
            self.start()
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the worker loop and wait for its result (request threads only)."""
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.running:
            self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        if self.running:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


def run_sync(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Call a request-scoped coroutine function from a request thread."""
    return async_to_sync(fn)(*args, **kwargs)


_process_loop: WorkerLoop | None = None
_process_lock = threading.Lock()


def process_loop() -> WorkerLoop:
    """This process's worker loop, made anew after a fork (gunicorn's post_fork starts it)."""
    global _process_loop
    with _process_lock:
        if _process_loop is None or _process_loop.pid != os.getpid():
            _process_loop = WorkerLoop()
        return _process_loop.start()
