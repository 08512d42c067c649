"""SearXNG's JSON API (`/search?format=json`)."""

from __future__ import annotations

import json

from .http_fake import FakeApi, Reply, Request

RESULTS = [
    {"url": "https://www.example.org/blog/rank-fusion/?utm_source=newsletter", "title": "Rank fusion, explained",
     "content": "Reciprocal rank fusion merges ranked lists by summing one over k plus rank; k is usually 60.",
     "engine": "duckduckgo", "engines": ["duckduckgo", "bing"], "score": 2.5, "category": "general",
     "parsed_url": ["https", "www.example.org", "/blog/rank-fusion/", "", "utm_source=newsletter", ""],
     "positions": [1, 2], "publishedDate": None},
    # design: the same article Wikipedia returns, spelled with a trailing slash and a tracker
    {"url": "https://en.wikipedia.org/wiki/Reciprocal_rank_fusion/?fbclid=abc", "title": "Reciprocal rank fusion - Wikipedia",
     "content": "Reciprocal rank fusion (RRF) is a method for combining the ranked result lists of several "
                "retrieval systems.", "engine": "bing", "engines": ["bing"], "score": 1.0, "category": "general",
     "positions": [3], "publishedDate": None},
    {"url": "https://news.example.com/2024/search-agents", "title": "Search agents go multi-source",
     "content": "Multi-agent search systems query many sources in parallel and fuse what they find.",
     "engine": "google news", "engines": ["google news"], "score": 0.8, "category": "news",
     "positions": [4], "publishedDate": "2024-04-30T08:00:00"},
]


def respond(request: Request) -> Reply:
    if request.path != "/search" or request.params.get("format") != "json":
        return 403, "text/html", b"<html>Forbidden</html>"  # SearXNG without the json format enabled
    body = {"query": request.params.get("q", ""), "number_of_results": 0, "results": RESULTS, "answers": [],
            "corrections": [], "infoboxes": [], "suggestions": ["rank fusion k"], "unresponsive_engines": []}
    return 200, "application/json", json.dumps(body).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "", **state)
