"""One HTTP client per event loop and SDK, shared by the providers made on that loop.

design: a provider is made per task, and an SDK client of its own built an HTTP client,
its TLS context (certificates loaded: tens of ms on the worker loop before the planner's
call) and new connections for every task. The tasks of one loop share one pool instead;
a client is bound to the loop it was first used on, so each loop has its own."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Callable[[], Any], Any]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def loop_client(factory: Callable[[], Any]) -> Any:
    """The running loop's client made by `factory` (an SDK's DefaultAsyncHttpxClient)."""
    loop = asyncio.get_running_loop()
    with _lock:
        clients = _pools.setdefault(loop, {})
        client = clients.get(factory)
        if client is None or client.is_closed:
            client = clients[factory] = factory()
        return client
