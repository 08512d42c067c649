"""MediaWiki Action API (`/w/api.php?action=query&generator=search&prop=extracts|info`),
formatversion=2 JSON as en.wikipedia.org answers it."""

from __future__ import annotations

import json

from .http_fake import FakeApi, Reply, Request, limit

PAGES = [
    {"pageid": 23862, "title": "Reciprocal rank fusion",
     "extract": "Reciprocal rank fusion (RRF) is a method for combining the ranked result lists of several "
                "retrieval systems. Each document scores the sum of one over k plus its rank in every list, "
                "with k usually set to 60."},
    {"pageid": 1804, "title": "Information retrieval",
     "extract": "Information retrieval is the task of identifying and retrieving information system resources "
                "that are relevant to an information need. Search engines are the most visible applications."},
    {"pageid": 5213, "title": "Metasearch engine",
     "extract": "A metasearch engine is an online information retrieval tool that uses the data of other web "
                "search engines to produce its own results, merging and ranking them."},
]


def page_url(title: str) -> str:
    return "https://en.wikipedia.org/wiki/" + title.replace(" ", "_")


def respond(request: Request) -> Reply:
    p = request.params
    if request.path != "/w/api.php" or p.get("action") != "query":
        return 200, "application/json", json.dumps({"error": {"code": "badvalue", "info": "bad action"}}).encode()
    n = limit(p, "gsrlimit", 10)
    pages = [{"ns": 0, **page, "index": i, "contentmodel": "wikitext", "pagelanguage": "en",
              "touched": "2024-05-01T10:00:00Z", "lastrevid": 1000 + i, "length": 4000,
              "fullurl": page_url(page["title"]), "editurl": page_url(page["title"]) + "?action=edit",
              "canonicalurl": page_url(page["title"])}
             for i, page in enumerate(PAGES[:n], start=1)]
    # design: the real API lists generator pages by page id, not by rank; `index` gives the rank.
    body = {"batchcomplete": True, "continue": {"gsroffset": n, "continue": "gsroffset||"},
            "query": {"pages": sorted(pages, key=lambda x: x["pageid"])}}
    return 200, "application/json; charset=utf-8", json.dumps(body).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "/w/api.php", **state)
