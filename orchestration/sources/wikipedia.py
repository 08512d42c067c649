"""Wikipedia through the MediaWiki Action API: a full-text search (`generator=search`)
returning each page's canonical URL and the plain-text extract of its introduction."""

from __future__ import annotations

from ..models import Hit
from ..webclient import HttpSource
from ._text import clip, plain


class WikipediaSource(HttpSource):
    name = "wikipedia"
    description = "Wikipedia articles (MediaWiki Action API full-text search, with each article's introduction)."
    setting = "WIKIPEDIA_API_URL"
    public_url = "https://en.wikipedia.org/w/api.php"

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        limit = max(1, min(limit, 20))  # design: prop=extracts serves at most 20 intros per call
        data = await self.get_json(self.base_url, {
            "action": "query", "format": "json", "formatversion": "2", "generator": "search",
            "gsrsearch": query, "gsrlimit": limit, "gsrnamespace": 0, "prop": "extracts|info",
            "exintro": 1, "explaintext": 1, "exlimit": limit, "inprop": "url", "redirects": 1,
        })
        pages = self.answer_list(data, "query", "pages")
        hits = []
        for page in sorted(pages, key=lambda p: p.get("index", 0)):
            if page.get("missing") or "title" not in page:
                continue
            text = plain(page.get("extract"))
            hits.append(Hit(
                title=page["title"], url=page.get("canonicalurl") or page.get("fullurl") or "",
                snippet=clip(text), source=self.name, text=text,
                metadata={"pageid": page.get("pageid"), "touched": page.get("touched")}))
        return [h for h in hits if h.url][:limit]
