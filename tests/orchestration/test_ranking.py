"""Reciprocal rank fusion, URL normalisation and citation numbering."""

from __future__ import annotations

from orchestration.citations import drop_unknown, number_sources
from orchestration.models import AgentResult, Citation, Hit
from orchestration.ranking import RankedList, fuse, fuse_hits, normalize_url


def hit(url, source="web", title=None):
    return Hit(title=title or url, url=url, snippet="s", source=source)


def test_urls_that_name_the_same_page_normalise_together():
    same = ["https://www.example.com/a/", "http://example.com/a", "https://example.com/a?utm_source=x&fbclid=1",
            "https://EXAMPLE.com/a#frag"]
    assert len({normalize_url(u) for u in same}) == 1
    assert normalize_url("https://example.com/a?b=2&a=1") == normalize_url("https://example.com/a?a=1&b=2")
    assert normalize_url("https://example.com/a") != normalize_url("https://example.com/b")
    assert normalize_url("docs/x.md#caddy") != normalize_url("docs/x.md#systemd")


def test_fusion_follows_rrf_and_keeps_provenance():
    lists = [
        RankedList("agent_1", "web", [hit("https://a.org"), hit("https://b.org")]),
        RankedList("agent_2", "arxiv", [hit("https://www.b.org/", "arxiv"), hit("https://c.org", "arxiv")]),
    ]
    fused = fuse(lists, limit=10)
    assert [s.url for s in fused] == ["https://b.org", "https://a.org", "https://c.org"]
    b = fused[0]
    assert b.id == "S1" and b.rank == 1
    assert abs(b.score - (1 / 62 + 1 / 61)) < 1e-6
    assert [(f.agent_id, f.source, f.rank) for f in b.found_by] == [("agent_1", "web", 2), ("agent_2", "arxiv", 1)]
    assert len(fuse(lists, limit=2)) == 2


def test_agent_citations_are_numbered_once_across_agents():
    a1 = AgentResult("agent_1", "subtask_1", "research", "completed", "X [1]. Y [2].",
                     [Citation(1, "A", "https://a.org", "web", "a"), Citation(2, "B", "https://b.org", "web", "b")])
    a2 = AgentResult("agent_2", "subtask_2", "research", "completed", "Z [1]. W [3].",
                     [Citation(1, "B", "https://www.b.org/", "web", "b")])
    sources, rewritten = number_sources([a1, a2])
    assert [s.id for s in sources] == ["S1", "S2"]
    assert rewritten == {"agent_1": "X [S1]. Y [S2].", "agent_2": "Z [S2]. W ."}
    assert {f.agent_id for f in sources[1].found_by} == {"agent_1", "agent_2"}
    text, dropped = drop_unknown("ok [S1] bad [S9]", {"S1"})
    assert (text, dropped) == ("ok [S1] bad ", 1)


def test_two_chunks_of_one_page_are_two_passages_but_one_source():
    first = Hit("G", "docs/g.md#s", "a", "local", text="first chunk", metadata={"chunk": 1})
    second = Hit("G", "docs/g.md#s", "b", "local", text="second chunk", metadata={"chunk": 2})
    lists = [RankedList("agent_1", "local", [first, second, hit("docs/h.md")]),
             RankedList("agent_2", "local", [hit("docs/h.md"), first])]
    assert [h.text or h.url for h in fuse_hits(lists, limit=10)] == ["first chunk", "docs/h.md", "second chunk"]
    fused = fuse(lists, limit=10)  # a page's rank in a list is its best chunk's
    assert [s.url for s in fused] == ["docs/g.md#s", "docs/h.md"]
    assert abs(fused[0].score - (1 / 61 + 1 / 62)) < 1e-6 and len(fused[0].found_by) == 2
