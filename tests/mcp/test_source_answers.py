"""Unexpected upstream answers (issue #14 item 5): every search source treats a wrong-shaped
answer, an HTML error page or a truncated body as its own error. Its tool answers 502
`source_error` naming the source and what was wrong (never 500), an agent records it in
`source_errors`, and /health shows the source's last error."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app import create_app
from tests.fakes import (arxiv_server, brave_server, github_server, hackernews_server, searxng_server,
                         semantic_scholar_server, wikipedia_server)
from tests.fakes.http_fake import Reply, Request

HTML_ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>"
                   b"<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>")


def as_json(body: Any) -> Callable[[Request], Reply]:
    return lambda request: (200, "application/json", json.dumps(body).encode())


@dataclass
class Case:
    module: Any  # the fake API's module in tests/fakes
    source: str  # the service's source, whose tool is `<source>_search`
    settings: dict[str, str]  # how the source is pointed at the fake ("{url}" is the fake's URL)
    wrong_shape: Callable[[Request], Reply]  # a documented-looking answer of another shape
    agent_type: str  # an orchestrate_search agent type that asks this source


CASES = {
    # formatversion=1: pages keyed by page id, the shape of the original report
    "wikipedia": Case(wikipedia_server, "wikipedia", {"wikipedia_api_url": "{url}"},
                      as_json({"batchcomplete": "", "query": {"pages": {"23862": {
                          "pageid": 23862, "ns": 0, "title": "Reciprocal rank fusion", "extract": "RRF ..."}}}}),
                      "encyclopedia"),
    "arxiv": Case(arxiv_server, "arxiv", {"arxiv_api_url": "{url}"},
                  lambda request: (200, "application/xml", b'<?xml version="1.0"?><rss version="2.0"><channel>'
                                                           b"<title>arXiv</title></channel></rss>"), "academic"),
    "searxng": Case(searxng_server, "web", {"searxng_url": "{url}"},
                    as_json({"query": "q", "results": {"0": {"url": "https://example.org/", "title": "x"}}}), "web"),
    "brave": Case(brave_server, "web", {"brave_api_key": brave_server.KEY, "brave_api_url": "{url}"},
                  as_json({"type": "search", "web": {"results": [["https://example.org/", "x"]]}}), "web"),
    "github": Case(github_server, "github", {"github_api_url": "{url}"},
                   as_json({"total_count": 1, "items": {"html_url": "https://github.com/acme/x"}}), "technical"),
    "hackernews": Case(hackernews_server, "hackernews", {"hn_api_url": "{url}"},
                       as_json({"hits": "rate limited", "nbHits": 0}), "social"),
    "semantic_scholar": Case(semantic_scholar_server, "semantic_scholar", {"semantic_scholar_api_url": "{url}"},
                             as_json([{"paperId": "abc", "title": "A list, not the documented object"}]),
                             "academic"),
}


def html_page(request: Request) -> Reply:
    return 200, "text/html; charset=utf-8", HTML_ERROR_PAGE


def truncated(module: Any) -> Callable[[Request], Reply]:
    def respond(request: Request) -> Reply:
        status, ctype, body = module.respond(request)
        return status, ctype, body[:len(body) // 2]
    return respond


@pytest.fixture(params=sorted(CASES))
def wired(request, settings):
    case = CASES[request.param]
    fake = case.module.server().start()
    configured = {field: value.format(url=fake.url) for field, value in case.settings.items()}
    # design: every other network source stays off, so an agent's errors are this source's
    app = create_app(dataclasses.replace(settings, agent_read_pages=0, **configured))
    yield case, fake, app.test_client()
    app.extensions["mcp_orchestrator"].runtime.stop()
    fake.stop()


@pytest.mark.parametrize("answer, problem", [
    pytest.param(answer, problem, id=answer) for answer, problem in (
        ("wrong_shape", "unexpected answer"), ("html", "HTML"), ("truncated", "cut off"),
        ("cut_in_transfer", "without sending complete message body"))])
def test_an_unexpected_answer_is_the_sources_502_and_its_last_error_in_health(wired, answer, problem):
    """`truncated`: a whole, well-framed body that is only the first half of the answer;
    `cut_in_transfer`: the connection closes before the announced Content-Length arrived."""
    case, fake, client = wired
    fake.respond = {"wrong_shape": case.wrong_shape, "html": html_page, "truncated": truncated(case.module),
                    "cut_in_transfer": case.module.respond}[answer]
    fake.state.cut_off = answer == "cut_in_transfer"
    response = client.post(f"/tools/{case.source}_search", json={"query": f"rank fusion {answer}"})
    assert response.status_code == 502, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "source_error" and body["details"]["source"] == case.source
    assert body["message"].startswith(f"{case.source}: ") or body["message"].startswith(
        f"{'searxng' if 'searxng_url' in case.settings else 'brave'}: {case.source}: "), body
    assert problem in body["message"], body
    last = client.get("/health").get_json()["checks"]["sources"][case.source]["last_error"]
    assert last["error"] == body["message"] and last["at"] > 0


def test_an_agent_records_the_unexpected_answer_in_source_errors(wired):
    case, fake, client = wired
    fake.respond = case.wrong_shape
    done = client.post("/tools/orchestrate_search", json={"query": "rank fusion across agents", "num_agents": 1,
                                                          "agent_types": [case.agent_type], "wait": True})
    assert done.status_code == 200, done.get_json()
    events = client.get(f"/tasks/{done.get_json()['task_id']}/events").get_json()["events"]
    ended = [e for e in events if e["event_type"] in ("agent_complete", "agent_error")]
    assert len(ended) == 1
    errors = ended[0]["data"]["source_errors"]
    assert "unexpected answer" in errors[case.source], errors
    assert done.get_json()["status"] == "completed"
