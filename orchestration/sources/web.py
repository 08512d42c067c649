"""Web search: a SearXNG instance's JSON API (`SEARXNG_URL`) and/or the Brave Search API
(`BRAVE_API_KEY`). With both configured both are asked and their lists fused by
reciprocal rank; one of them failing leaves the other's results."""

from __future__ import annotations

import asyncio

from ..errors import SourceError
from ..models import Hit
from ..ranking import RankedList, fuse_hits
from ..webclient import HttpSource
from ._text import clip, plain

BRAVE_DEFAULT_URL = "https://api.search.brave.com/res/v1/web/search"


class WebSource(HttpSource):
    name = "web"
    description = "Web search through SearXNG (JSON API) and/or the Brave Search API."

    def __init__(self, searxng_url: str = "", brave_api_key: str = "", brave_api_url: str = "", **options):
        self.searxng_url = searxng_url.rstrip("/")
        self.brave_api_key = brave_api_key
        self.brave_api_url = (brave_api_url or BRAVE_DEFAULT_URL) if brave_api_key else ""
        configured = self.searxng_url or self.brave_api_url
        super().__init__(configured, disabled_reason=None if configured else "set SEARXNG_URL or BRAVE_API_KEY",
                         **options)

    def describe(self) -> dict:
        backends = [b for b, on in (("searxng", self.searxng_url), ("brave", self.brave_api_url)) if on]
        return {**super().describe(), "url": self.searxng_url or None, "backends": backends}

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        backends = [(name, fn) for name, fn, on in (("searxng", self._searxng, self.searxng_url),
                                                    ("brave", self._brave, self.brave_api_url)) if on]
        outcomes = await asyncio.gather(*(fn(query, limit) for _, fn in backends), return_exceptions=True)
        lists, errors = [], []
        for (backend, _), outcome in zip(backends, outcomes):
            if isinstance(outcome, SourceError):
                errors.append(f"{backend}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                lists.append(RankedList(self.name, backend, outcome))
        if not lists:
            raise SourceError("; ".join(errors))
        return lists[0].hits[:limit] if len(lists) == 1 else fuse_hits(lists, limit)

    async def _searxng(self, query: str, limit: int) -> list[Hit]:
        data = await self.get_json(f"{self.searxng_url}/search", {"q": query, "format": "json", "pageno": 1,
                                                                  "safesearch": 1})
        hits = []
        for item in self.answer_list(data, "results"):
            if not item.get("url"):
                continue
            text = plain(item.get("content"))
            hits.append(Hit(title=plain(item.get("title")) or item["url"], url=item["url"], snippet=clip(text),
                            source=self.name, text=text, score=float(item.get("score") or 0.0),
                            metadata={"backend": "searxng", "engines": item.get("engines") or [item.get("engine")],
                                      "published": item.get("publishedDate")}))
        return hits[:limit]

    async def _brave(self, query: str, limit: int) -> list[Hit]:
        data = await self.get_json(self.brave_api_url, {"q": query, "count": max(1, min(limit, 20))},
                                   {"Accept": "application/json", "X-Subscription-Token": self.brave_api_key})
        hits = []
        for item in self.answer_list(data, "web", "results"):
            if not item.get("url"):
                continue
            text = " ".join([plain(item.get("description")), *(plain(x) for x in item.get("extra_snippets") or [])])
            hits.append(Hit(title=plain(item.get("title")) or item["url"], url=item["url"],
                            snippet=clip(plain(item.get("description"))), source=self.name, text=text.strip(),
                            metadata={"backend": "brave", "age": item.get("age")}))
        return hits[:limit]
