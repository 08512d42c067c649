"""The search sources' response cache, kept in the store so every worker (and host) shares
it: a search one worker just made is not repeated by the next."""

from __future__ import annotations

import asyncio
import logging

from .store import Store

log = logging.getLogger(__name__)


class StoreCache:
    """orchestration.webclient.ResponseCache over Store.cache_get / cache_set. A cache is
    best effort: while the store is out of reach a lookup is a miss and a write is skipped,
    so a search does not fail for the want of its cache."""

    def __init__(self, store: Store):
        self.store = store

    async def get(self, key: str) -> str | None:
        try:
            return await asyncio.to_thread(self.store.cache_get, key)
        except self.store.unavailable_errors as exc:
            log.info("response cache unavailable, searching without it: %s", exc)
            return None

    async def set(self, key: str, value: str, ttl: float) -> None:
        try:
            await asyncio.to_thread(self.store.cache_set, key, value, ttl)
        except self.store.unavailable_errors as exc:
            log.info("response cache unavailable, result not cached: %s", exc)
