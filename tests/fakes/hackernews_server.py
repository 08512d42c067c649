"""Hacker News Algolia API (`/api/v1/search`)."""

from __future__ import annotations

import json

from .http_fake import FakeApi, Reply, Request, limit

HITS = [
    {"objectID": "39001", "title": "Show HN: Rank fusion for my search side project",
     "url": "https://github.com/acme/rank-fusion", "author": "pg", "points": 321, "num_comments": 88,
     "story_text": None, "created_at": "2024-01-10T12:00:00Z", "created_at_i": 1704888000},
    {"objectID": "39002", "title": "Ask HN: How do you verify LLM citations?", "url": None, "author": "dang",
     "points": 45, "num_comments": 60, "story_text": "Models cite sources that do not say what they claim.",
     "created_at": "2024-02-01T12:00:00Z", "created_at_i": 1706788800},
]


def respond(request: Request) -> Reply:
    if request.path != "/api/v1/search":
        return 404, "application/json", b'{"message":"Not Found","status":404}'
    n = limit(request.params, "hitsPerPage", 20)
    hits = [{**h, "_tags": ["story", f"author_{h['author']}", f"story_{h['objectID']}"],
             "_highlightResult": {"title": {"value": h["title"], "matchLevel": "full"}}} for h in HITS[:n]]
    body = {"hits": hits, "nbHits": len(hits), "page": 0, "nbPages": 1, "hitsPerPage": n, "exhaustiveNbHits": True,
            "query": request.params.get("query", ""), "params": f"query={request.params.get('query', '')}",
            "processingTimeMS": 1}
    return 200, "application/json; charset=utf-8", json.dumps(body).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "/api/v1", **state)
