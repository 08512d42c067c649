"""arXiv Atom API (`/api/query`), the feed export.arxiv.org serves."""

from __future__ import annotations

from xml.sax.saxutils import escape

from .http_fake import FakeApi, Reply, Request, limit

PAPERS = [
    ("2101.00001", "v2", "Rank Fusion for Multi-Agent Search",
     "We study reciprocal rank fusion for combining result lists from several search agents and show that "
     "fusing with k equal to 60 is robust across sources.", ["Ada Lovelace", "Alan Turing"]),
    ("2203.04567", "v1", "Verifying Citations in Generated Reports",
     "Generated reports often cite sources that do not support their claims. We measure lexical overlap "
     "between each cited sentence and its source to catch unsupported citations.", ["Grace Hopper"]),
]


def feed(query: str, papers: list[tuple]) -> str:
    entries = []
    for arxiv_id, version, title, summary, authors in papers:
        authors_xml = "".join(f"<author><name>{escape(a)}</name></author>" for a in authors)
        entries.append(f"""
  <entry>
    <id>http://arxiv.org/abs/{arxiv_id}{version}</id>
    <updated>2021-01-04T18:00:00Z</updated>
    <published>2021-01-01T18:00:00Z</published>
    <title>{escape(title)}</title>
    <summary>  {escape(summary)}
</summary>
    {authors_xml}
    <link href="http://arxiv.org/abs/{arxiv_id}{version}" rel="alternate" type="text/html"/>
    <link title="pdf" href="http://arxiv.org/pdf/{arxiv_id}{version}" rel="related" type="application/pdf"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="cs.IR" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.IR" scheme="http://arxiv.org/schemas/atom"/>
  </entry>""")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query?search_query%3D{escape(query)}" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query: search_query={escape(query)}</title>
  <id>http://arxiv.org/api/cHxbiOdZaP56ODnBPIenZhzg5f8</id>
  <updated>2024-05-01T00:00:00-04:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{len(papers)}</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">0</opensearch:startIndex>
  <opensearch:itemsPerPage xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">{len(papers)}</opensearch:itemsPerPage>{''.join(entries)}
</feed>
"""


def respond(request: Request) -> Reply:
    if request.path != "/api/query":
        return 404, "text/plain", b"not found"
    query = request.params.get("search_query", "")
    return 200, "application/atom+xml; charset=utf-8", feed(query, PAPERS[:limit(request.params, "max_results", 10)]).encode()


def server(**state) -> FakeApi:
    return FakeApi(respond, "/api/query", **state)
