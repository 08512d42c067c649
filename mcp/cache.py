"""The search sources' response cache, kept in the store so every worker (and host) shares
it: a search one worker just made is not repeated by the next."""

from __future__ import annotations

import asyncio

from .store import Store


class StoreCache:
    """orchestration.webclient.ResponseCache over Store.cache_get / cache_set."""

    def __init__(self, store: Store):
        self.store = store

    async def get(self, key: str) -> str | None:
        return await asyncio.to_thread(self.store.cache_get, key)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await asyncio.to_thread(self.store.cache_set, key, value, ttl)
