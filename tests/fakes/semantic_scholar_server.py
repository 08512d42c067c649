"""Semantic Scholar Graph API (`/graph/v1/paper/search`)."""

from __future__ import annotations

import json

from .http_fake import FakeApi, Reply, Request, limit

PAPERS = [
    # design: the same paper the arXiv fake returns, so fusion can merge the two
    {"paperId": "a1b2c3", "url": "https://www.semanticscholar.org/paper/a1b2c3", "title": "Rank Fusion for Multi-Agent Search",
     "abstract": "We study reciprocal rank fusion for combining result lists from several search agents.",
     "year": 2021, "venue": "SIGIR", "citationCount": 12, "externalIds": {"ArXiv": "2101.00001", "DOI": "10.1/rrf"},
     "authors": [{"authorId": "1", "name": "Ada Lovelace"}], "tldr": None},
    {"paperId": "d4e5f6", "url": "https://www.semanticscholar.org/paper/d4e5f6", "title": "Fusion Baselines Revisited",
     "abstract": None, "year": 2019, "venue": "", "citationCount": 3, "externalIds": {"DOI": "10.1/fbr"},
     "authors": [], "tldr": {"model": "tldr@v2.0.0", "text": "Simple fusion baselines remain strong."}},
]


def respond(request: Request) -> Reply:
    if request.path != "/graph/v1/paper/search":
        return 404, "application/json", b'{"error":"Not found"}'
    if not request.params.get("query"):
        return 400, "application/json", b'{"error":"Missing required parameter: query"}'
    fields = set(request.params.get("fields", "title").split(","))
    data = [{k: v for k, v in p.items() if k == "paperId" or k in fields}
            for p in PAPERS[:limit(request.params, "limit", 10)]]
    body = {"total": len(data), "offset": 0, "next": len(data), "data": data}
    return 200, "application/json", json.dumps(body).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "/graph/v1", **state)
