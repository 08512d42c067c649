"""GitHub repositories through the REST search API (`/search/repositories`). A token
(`GITHUB_TOKEN`) raises the rate limit from 10 to 30 searches a minute."""

from __future__ import annotations

from ..models import Hit
from ..webclient import HttpSource
from ._text import clip, plain

GITHUB_DEFAULT_URL = "https://api.github.com"


class GitHubSource(HttpSource):
    name = "github"
    description = "GitHub repositories (REST search API): name, description, topics, stars."

    def __init__(self, api_url: str = "", token: str = "", **options):
        self.token = token
        super().__init__(api_url or (GITHUB_DEFAULT_URL if token else ""),
                         disabled_reason=None if api_url or token else "set GITHUB_API_URL or GITHUB_TOKEN", **options)

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = await self.get_json(f"{self.base_url}/search/repositories",
                                   {"q": query, "per_page": max(1, min(limit, 100)), "page": 1}, headers)
        hits = []
        for item in self.answer_list(data, "items"):
            if not item.get("html_url"):
                continue
            description = plain(item.get("description"))
            topics = item.get("topics") or []
            text = " ".join(filter(None, [description, "Topics: " + ", ".join(topics) if topics else ""]))
            hits.append(Hit(title=item.get("full_name") or item["html_url"], url=item["html_url"],
                            snippet=clip(description), source=self.name, text=text,
                            score=float(item.get("score") or 0.0),
                            metadata={"stars": item.get("stargazers_count"), "language": item.get("language"),
                                      "updated_at": item.get("updated_at"), "topics": topics}))
        return hits[:limit]
