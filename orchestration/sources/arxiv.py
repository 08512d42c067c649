"""arXiv through its Atom API (`/api/query`). arXiv asks clients for one request every
three seconds; the interval is the source's politeness setting."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ..models import Hit
from ..text import STOPWORDS
from ..webclient import HttpSource
from ._text import clip, plain

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"
MAX_TERMS = 6


def search_query(query: str) -> str:
    """arXiv's query syntax: each content word must appear in any field (`all:`)."""
    words = [w for w in re.findall(r"[\w-]+", query.lower()) if w not in STOPWORDS]
    return " AND ".join(f"all:{w}" for w in list(dict.fromkeys(words))[:MAX_TERMS]) or f"all:{query.strip()}"


def abs_url(entry_id: str) -> str:
    """`http://arxiv.org/abs/2101.00001v2` -> `https://arxiv.org/abs/2101.00001`: one URL
    per paper whatever the version, the same one Semantic Scholar's arXiv ids map to."""
    match = re.search(r"arxiv\.org/abs/(.+?)(?:v\d+)?$", entry_id.strip())
    return f"https://arxiv.org/abs/{match.group(1)}" if match else entry_id.strip()


class ArxivSource(HttpSource):
    name = "arxiv"
    description = "arXiv preprints (Atom API): titles, authors and abstracts."
    setting = "ARXIV_API_URL"
    public_url = "https://export.arxiv.org/api/query"
    default_interval = 3.0

    def atom_feed(self, body: str) -> ET.Element:
        """The root of an Atom feed; SourceError for anything else (an HTML error page,
        another XML document, a feed cut off)."""
        try:
            # design: expat (>= 2.4.1, as Python 3.11 ships it) refuses entity-expansion bombs.
            feed = ET.fromstring(body)
        except ET.ParseError as exc:
            raise self.unexpected(f"not Atom XML, or XML cut off ({exc}): {body.strip()[:120]!r}") from None
        if feed.tag.rsplit("}", 1)[-1].lower() == "html":
            raise self.unexpected(f"an HTML page, not an Atom feed: {body.strip()[:120]!r}")
        if feed.tag != f"{ATOM}feed":
            raise self.unexpected(f"an XML document whose root is <{feed.tag}>, not an Atom <feed>")
        return feed

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        body = await self.get_text(self.base_url, {"search_query": search_query(query), "start": 0,
                                                   "max_results": max(1, min(limit, 50)), "sortBy": "relevance",
                                                   "sortOrder": "descending"}, check=self.atom_feed)
        feed = self.atom_feed(body)
        hits = []
        for entry in feed.findall(f"{ATOM}entry"):
            entry_id = entry.findtext(f"{ATOM}id") or ""
            title = plain(entry.findtext(f"{ATOM}title"))
            if not entry_id or not title or "/api/errors" in entry_id:
                continue
            summary = plain(entry.findtext(f"{ATOM}summary"))
            authors = [plain(a.findtext(f"{ATOM}name")) for a in entry.findall(f"{ATOM}author")]
            pdf = next((link.get("href") for link in entry.findall(f"{ATOM}link") if link.get("title") == "pdf"), None)
            category = entry.find(f"{ARXIV}primary_category")
            hits.append(Hit(title=title, url=abs_url(entry_id), snippet=clip(summary), source=self.name,
                            text=summary, metadata={
                                "authors": authors, "published": entry.findtext(f"{ATOM}published"),
                                "pdf_url": pdf, "primary_category": category.get("term") if category is not None
                                else None}))
        return hits[:limit]
