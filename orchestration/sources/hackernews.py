"""Hacker News stories through the Algolia search API (`/search?tags=story`)."""

from __future__ import annotations

from ..models import Hit
from ..webclient import HttpSource
from ._text import clip, plain

ITEM_URL = "https://news.ycombinator.com/item?id={}"


class HackerNewsSource(HttpSource):
    name = "hackernews"
    description = "Hacker News stories and discussions (Algolia search API)."
    setting = "HN_API_URL"
    public_url = "https://hn.algolia.com/api/v1"

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        data = await self.get_json(f"{self.base_url}/search", {"query": query, "tags": "story",
                                                               "hitsPerPage": max(1, min(limit, 50))})
        hits = []
        for item in self.answer_list(data, "hits"):
            title = plain(item.get("title") or item.get("story_title"))
            if not title or not item.get("objectID"):
                continue
            discussion = ITEM_URL.format(item["objectID"])
            text = plain(item.get("story_text"))
            meta = f"{item.get('points') or 0} points, {item.get('num_comments') or 0} comments"
            hits.append(Hit(title=title, url=item.get("url") or discussion, snippet=clip(text) or meta,
                            source=self.name, text=" ".join(filter(None, [title + ".", text])),
                            metadata={"discussion_url": discussion, "points": item.get("points"),
                                      "num_comments": item.get("num_comments"), "author": item.get("author"),
                                      "created_at": item.get("created_at")}))
        return hits[:limit]
