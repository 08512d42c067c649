"""Running an orchestrator's agents side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def run_together(aws: Iterable[Awaitable[T]]) -> list[T]:
    """Run the awaitables side by side and return their results in order. The first one to
    raise cancels the rest, waits for them to stop, and is raised as itself.

    design: asyncio.gather raises the first error but leaves the other agents running, so a
    task that had already ended here kept calling the model (and spending) in the background;
    a TaskGroup cancels them but wraps the error in an ExceptionGroup the callers then unwrap."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
