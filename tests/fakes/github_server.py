"""GitHub REST search (`/search/repositories`)."""

from __future__ import annotations

import json

from .http_fake import FakeApi, Reply, Request, limit

REPOS = [
    {"id": 1, "name": "rank-fusion", "full_name": "acme/rank-fusion", "html_url": "https://github.com/acme/rank-fusion",
     "description": "Reciprocal rank fusion for multi-source search in Python.", "stargazers_count": 420,
     "language": "Python", "topics": ["search", "ranking"], "updated_at": "2024-04-01T00:00:00Z", "score": 1.0},
    {"id": 2, "name": "swarm-search", "full_name": "acme/swarm-search", "html_url": "https://github.com/acme/swarm-search",
     "description": "Agents that search many sources in parallel.", "stargazers_count": 77, "language": "Go",
     "topics": [], "updated_at": "2024-03-01T00:00:00Z", "score": 1.0},
]


def respond(request: Request) -> Reply:
    if request.path != "/search/repositories":
        return 404, "application/json", json.dumps({"message": "Not Found",
                                                    "documentation_url": "https://docs.github.com/rest"}).encode()
    if not request.params.get("q"):
        return 422, "application/json", json.dumps({"message": "Validation Failed"}).encode()
    items = [{"node_id": f"R_{r['id']}", "private": False, "owner": {"login": "acme"}, "fork": False, **r}
             for r in REPOS[:limit(request.params, "per_page", 30)]]
    return 200, "application/json; charset=utf-8", json.dumps(
        {"total_count": len(items), "incomplete_results": False, "items": items}).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "", **state)
