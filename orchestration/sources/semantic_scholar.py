"""Papers through the Semantic Scholar Graph API (`/paper/search`). A paper with an arXiv
id is given its arXiv abstract URL, so it fuses with the same paper found on arXiv."""

from __future__ import annotations

from ..models import Hit
from ..webclient import HttpSource
from ._text import clip, plain

FIELDS = "title,url,abstract,year,authors,venue,citationCount,externalIds,tldr"


class SemanticScholarSource(HttpSource):
    name = "semantic_scholar"
    description = "Scholarly papers (Semantic Scholar Graph API): abstracts, venues, citation counts."
    setting = "SEMANTIC_SCHOLAR_API_URL"
    public_url = "https://api.semanticscholar.org/graph/v1"
    default_interval = 1.0  # design: the shared unauthenticated pool allows about one request a second

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        data = await self.get_json(f"{self.base_url}/paper/search",
                                   {"query": query, "limit": max(1, min(limit, 100)), "fields": FIELDS})
        hits = []
        for paper in self.answer_list(data, "data"):
            title = plain(paper.get("title"))
            ids = paper.get("externalIds") or {}
            url = (f"https://arxiv.org/abs/{ids['ArXiv']}" if ids.get("ArXiv") else
                   paper.get("url") or (f"https://www.semanticscholar.org/paper/{paper['paperId']}"
                                        if paper.get("paperId") else ""))
            if not title or not url:
                continue
            abstract = plain(paper.get("abstract") or ((paper.get("tldr") or {}).get("text")))
            hits.append(Hit(title=title, url=url, snippet=clip(abstract), source=self.name, text=abstract,
                            metadata={"paper_id": paper.get("paperId"), "year": paper.get("year"),
                                      "venue": paper.get("venue"), "citation_count": paper.get("citationCount"),
                                      "authors": [a.get("name") for a in paper.get("authors") or []],
                                      "doi": ids.get("DOI"), "semantic_scholar_url": paper.get("url")}))
        return hits[:limit]
