"""Brave Search API (`/res/v1/web/search`), which needs `X-Subscription-Token`."""

from __future__ import annotations

import json

from .http_fake import FakeApi, Reply, Request, limit

KEY = "brave-test-key"
RESULTS = [
    {"title": "Rank fusion, explained", "url": "https://example.org/blog/rank-fusion",
     "description": "Reciprocal <strong>rank fusion</strong> merges ranked lists.", "age": "2 days ago",
     "language": "en", "family_friendly": True, "extra_snippets": ["k is usually 60."]},
    {"title": "Brave only result", "url": "https://brave.example.net/page",
     "description": "A page only Brave returns.", "language": "en", "family_friendly": True},
]


def respond(request: Request) -> Reply:
    if request.path != "/res/v1/web/search":
        return 404, "application/json", b"{}"
    if request.headers.get("x-subscription-token") != KEY:
        return 401, "application/json", json.dumps({"type": "ErrorResponse", "error": {
            "code": "SUBSCRIPTION_TOKEN_INVALID", "status": 401, "detail": "The provided subscription token is invalid."
        }}).encode()
    body = {"type": "search", "query": {"original": request.params.get("q", ""), "more_results_available": False},
            "mixed": {"type": "mixed", "main": [{"type": "web", "index": 0, "all": False}]},
            "web": {"type": "search", "results": [{"type": "search_result", **r}
                                                   for r in RESULTS[:limit(request.params, "count", 20)]],
                    "family_friendly": True}}
    return 200, "application/json", json.dumps(body).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "/res/v1/web/search", **state)
