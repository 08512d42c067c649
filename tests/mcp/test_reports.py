"""Report documents (DESIGN §13): what a person gets from GET /tasks/<id>/report in each
format, read back the way a reader's tools read them (poppler for PDF, python-docx for
Word, a browser's HTML parser), and the route's HTTP behaviour."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import html5lib
import pytest
from docx import Document
from docx.oxml.ns import qn

from app import create_app
from mcp.reports import FORMATS, render
from mcp.reports.document import build_report
from tests.fakes.http_fake import FakeApi

FORMAT_TYPES = {"md": "text/markdown", "html": "text/html", "pdf": "application/pdf",
                "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
HOSTILE_TITLE = "&lt;script&gt;alert('title')&lt;/script&gt;Rank fusion &lt;img src=x onerror=alert(1)&gt; tricks"
HOSTILE_SNIPPET = ("&lt;a href=\"javascript:alert(2)\" onclick=\"alert(3)\"&gt;Reciprocal rank fusion&lt;/a&gt; "
                   "merges ranked lists &lt;script&gt;steal()&lt;/script&gt; by summing one over k plus rank.")
SAFE_URL = "https://fusion.example.org/guide?a=1&b=2"


def hostile_searxng(request):
    results = [
        {"url": SAFE_URL, "title": HOSTILE_TITLE, "content": HOSTILE_SNIPPET, "engine": "e", "score": 2.0},
        {"url": "javascript:alert(document.cookie)", "title": "Rank fusion <b onmouseover=alert(4)>scripted</b>",
         "content": "Rank fusion with a javascript: address instead of a page.", "engine": "e", "score": 1.0},
        {"url": "https://second.example.net/rrf", "title": "Reciprocal rank fusion notes",
         "content": "Reciprocal rank fusion sums one over k plus rank across the lists.", "engine": "e", "score": 0.5},
    ]
    return 200, "application/json", json.dumps({"query": request.params.get("q", ""), "results": results}).encode()


@pytest.fixture
def hostile_web():
    server = FakeApi(hostile_searxng, "").start()
    yield server
    server.stop()


@pytest.fixture
def client_with(settings):
    """A test client of an app built with these settings changed."""
    apps = []

    def make(**changes):
        apps.append(create_app(dataclasses.replace(settings, **changes)))
        return apps[-1].test_client()

    yield make
    for app in apps:
        app.extensions["mcp_orchestrator"].runtime.stop()


def finished(client, kind, **args):
    response = client.post(f"/tools/orchestrate_{kind}", json={"wait": True, **args})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def report(client, task_id, fmt, **headers):
    response = client.get(f"/tasks/{task_id}/report?format={fmt}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == FORMAT_TYPES[fmt]
    return response


def poppler(tool, pdf: bytes, tmp_path: Path, *args) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    return subprocess.run([tool, *args, str(path), "-"] if tool == "pdftotext" else [tool, *args, str(path)],
                          capture_output=True, text=True, check=True).stdout


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def md_headings(markdown: str) -> list[str]:
    out = []
    for line in markdown.splitlines():
        match = re.match(r"^(#{1,6}) (.+)$", line)
        if match:
            out.append(match.group(2).replace("\\", "").replace("&lt;", "<").replace("&amp;", "&"))
    return out


def pdf_links(pdf: bytes, tmp_path: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(link targets, outline entries with their page) as poppler's pdftohtml reads them; a
    link inside the document shows as `<file>.html#<page>`."""
    xml = poppler("pdftohtml", pdf, tmp_path, "-xml", "-stdout", "-i")
    links = re.findall(r'<a href="([^"]*)"', xml)
    outline = [(re.sub(r"<[^>]+>", "", text), int(page))
               for page, text in re.findall(r'<item page="(\d+)">(.*?)</item>', xml)]
    return [l.replace("&amp;", "&") for l in links], outline


def docx_links(doc) -> tuple[list[str], list[str]]:
    """(external link targets, internal bookmark anchors) of every hyperlink in the document."""
    external, internal = [], []
    for link in doc.element.body.iter(qn("w:hyperlink")):
        if link.get(qn("r:id")):
            external.append(doc.part.rels[link.get(qn("r:id"))].target_ref)
        else:
            internal.append(link.get(qn("w:anchor")))
    return external, internal


@pytest.mark.parametrize("kind, args", [("research", {"query": "how does the sqlite store serve workers",
                                                      "num_agents": 3}),
                                        ("search", {"query": "sqlite store workers leases"})])
def test_reports_of_the_embedded_default_in_every_format(client, tmp_path, kind, args):
    result = finished(client, kind, **args)
    task_id = result["task_id"]
    markdown = report(client, task_id, "md").get_data(as_text=True)
    cited = sorted(set(re.findall(r"\[S\d+\]", result["final_synthesis"].split("\n## Sources\n")[0])))
    assert cited, "the report cites nothing; the test would prove nothing"
    headings = md_headings(markdown)
    assert headings[0] == args["query"] and {"Citation verification", "Usage and cost"} <= set(headings)
    for tag in cited:  # every [Sn] links to its numbered entry
        anchor = f"source-{tag[1:-1].lower()}"
        assert f"[\\{tag[:-1]}\\]](#{anchor})" in markdown and f'<a id="{anchor}"></a>' in markdown
    assert f"{len(result['sources'])}. <a id=" in markdown

    pdf = report(client, task_id, "pdf").data
    text = " ".join(poppler("pdftotext", pdf, tmp_path).split())
    for heading in headings:
        assert " ".join(heading.split()) in text, heading
    for tag in cited:
        assert tag in text
    for source in result["sources"]:
        assert squash(source["url"]) in squash(text)
    info = poppler("pdfinfo", pdf, tmp_path)
    assert re.search(rf"^Title:\s+{re.escape(args['query'])}$", info, re.M)
    assert re.search(rf"^Subject:\s+{re.escape(args['query'])}$", info, re.M)
    links, outline = pdf_links(pdf, tmp_path)
    body_tags = re.findall(r"\]\(#source-s\d+\)", markdown)
    internal = [int(l.rsplit("#", 1)[1]) for l in links if re.search(r"\.html#\d+$", l)]
    assert len(internal) >= len(body_tags) > 0
    assert [" ".join(text.split()) for text, _ in outline] == headings  # the outline is the headings
    sources_page = next(page for text, page in outline if text in ("Sources", "Ranked results"))
    assert min(internal) >= sources_page  # every [Sn] lands in the sources list

    doc = Document(io.BytesIO(report(client, task_id, "docx").data))
    styled = [(p.style.name, p.text) for p in doc.paragraphs if p.style.name.startswith("Heading")]
    assert ("Heading 1", args["query"]) in styled
    assert ("Heading 2", "Citation verification") in styled
    assert [t for _, t in styled] == headings
    _, internal = docx_links(doc)
    bookmarks = {b.get(qn("w:name")) for b in doc.element.body.iter(qn("w:bookmarkStart"))}
    assert set(internal) <= bookmarks and {f"source_{t[1:-1].lower()}" for t in cited} <= set(internal)
    assert doc.core_properties.title == args["query"] and doc.core_properties.subject == args["query"]

    page = report(client, task_id, "html").get_data(as_text=True)
    assert_safe_html(page)
    assert all(f'href="#source-{t[1:-1].lower()}"' in page for t in cited)


def assert_safe_html(page: str) -> None:
    tree = html5lib.parse(page, namespaceHTMLElements=False)
    assert tree.findall(".//script") == [] and tree.findall(".//img") == [] and tree.findall(".//iframe") == []
    for element in tree.iter():
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), (element.tag, name)
            assert "javascript:" not in value.lower().replace(" ", ""), (element.tag, name, value)


def test_hostile_source_titles_snippets_and_urls_never_reach_a_document_as_markup(client_with, hostile_web, tmp_path):
    web_client = client_with(searxng_url=hostile_web.url)
    result = finished(web_client, "search", query="reciprocal rank fusion", agent_types=["web"])
    titles = [s["title"] for s in result["sources"]]
    assert any("<script>" in t for t in titles), titles  # the hostile input did reach the result
    task_id = result["task_id"]

    page = report(web_client, task_id, "html").get_data(as_text=True)
    assert_safe_html(page)
    assert "&lt;script&gt;alert('title')&lt;/script&gt;" in page  # shown as text, not run
    assert f'href="{SAFE_URL.replace("&", "&amp;")}"' in page

    markdown = report(web_client, task_id, "md").get_data(as_text=True)
    assert "<script" not in markdown.lower() and "<img" not in markdown.lower() and "<b " not in markdown
    assert "](javascript:" not in markdown and "(<javascript:" not in markdown

    pdf = report(web_client, task_id, "pdf").data
    links, _ = pdf_links(pdf, tmp_path)
    external = [l for l in links if not re.search(r"\.html#\d+$", l)]
    assert SAFE_URL in external and "https://second.example.net/rrf" in external
    assert all(l.startswith("https://") for l in external), external
    assert "<script>alert('title')</script>" in " ".join(poppler("pdftotext", pdf, tmp_path).split())

    doc = Document(io.BytesIO(report(web_client, task_id, "docx").data))
    external, _ = docx_links(doc)
    assert SAFE_URL in external and all(u.startswith("https://") for u in external), external


def test_raw_html_and_script_links_in_the_report_text_are_neutralised():
    body = ("# T\n\n## Part <script>alert(1)</script>\n\nSee <img src=x onerror=alert(2)> and "
            "[click](javascript:alert(3)) or [also](jav&#x61;script:alert(4)) or <javascript:alert(5)> [S1].\n\n"
            "[ref]: javascript:alert(6)\n\n| a | b |\n|---|---|\n| <b onclick=x>1</b> | `<script>` |\n\n"
            "```html\n<script>kept as code</script>\n```\n\n## Sources\n\n- [S1] x — y\n")
    result = {"task_id": "research_x", "orchestrator": "research", "status": "completed", "query": "q <i>",
              "title": None, "final_synthesis": body, "completed_at": 1.0,
              "sources": [{"id": "S1", "title": "One", "url": "https://one.example/", "source": "web",
                           "snippet": "s", "found_by": [{"agent_id": "agent_1", "source": "web", "rank": 1}]}]}
    rep = build_report(result, {"provider": "extractive"})
    page = render(FORMATS["html"], rep).decode()
    assert_safe_html(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;script&gt;kept as code&lt;/script&gt;" in page
    assert "<table>" in page and '<a class="citation" href="#source-s1"' in page
    markdown = render(FORMATS["md"], rep).decode()
    assert not re.search(r"\]\(\s*<?\s*jav|\]:\s*<?jav|<javascript:", markdown, re.I), markdown
    assert "<script>alert(1)" not in markdown and "<script>kept as code</script>" in markdown  # code stays code
    doc = Document(io.BytesIO(render(FORMATS["docx"], rep)))
    external, internal = docx_links(doc)
    assert external == ["https://one.example/"] and internal == ["source_s1"]
    assert any(t.style.name == "Table Grid" for t in doc.tables)


def test_report_route_ownership_formats_and_etag(client_with):
    keyed_client = client_with(api_keys=("alice:alice-key", "bob:bob-key"))
    alice, bob = {"X-API-Key": "alice-key"}, {"X-API-Key": "bob-key"}
    task = keyed_client.post("/tools/orchestrate_search", json={"query": "sqlite store", "wait": True},
                             headers=alice).get_json()
    url = f"/tasks/{task['task_id']}/report"
    gone = keyed_client.get(f"{url}?format=pdf", headers=bob)
    assert gone.status_code == 404 and gone.get_json()["error"] == "not_found"
    unknown = keyed_client.get(f"{url}?format=xlsx", headers=alice)
    assert unknown.status_code == 406 and unknown.get_json()["details"]["format"] == "xlsx"
    assert keyed_client.get(url, headers={**alice, "Accept": "image/png"}).status_code == 406
    assert keyed_client.get(url, headers={**alice, "Accept": "application/pdf"}).mimetype == "application/pdf"
    browser = keyed_client.get(url, headers={**alice, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.mimetype == "text/html" and "script-src" not in browser.headers["Content-Security-Policy"]
    assert keyed_client.get(url, headers=alice).mimetype == "text/markdown"

    first = keyed_client.get(f"{url}?format=docx", headers=alice)
    assert first.headers["Content-Disposition"] == 'attachment; filename="sqlite-store.docx"'
    etag = first.headers["ETag"]
    again = keyed_client.get(f"{url}?format=docx", headers={**alice, "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert keyed_client.get(f"{url}?format=docx", headers=alice).data == first.data  # kept, not made anew
    assert keyed_client.get(f"{url}?format=md", headers={**alice, "If-None-Match": etag}).status_code == 200

    tool = "/tools/get_orchestration_result"
    as_json = keyed_client.post(tool, json={"task_id": task["task_id"], "format": "docx"}, headers=alice).get_json()
    assert base64.b64decode(as_json["blob"]) == first.data and as_json["etag"] == etag.strip('"')
    assert as_json["uri"] == f"orchestrator://tasks/{task['task_id']}/report.docx"
    assert keyed_client.post(tool, json={"task_id": task["task_id"], "format": "md"}, headers=bob).status_code == 404


def test_report_is_409_while_running_unless_partial_and_names_why_a_report_is_partial(client_with):
    idle_client = client_with(max_concurrent_tasks=0)  # its workers take no task: tasks stay pending
    handle = idle_client.post("/tools/orchestrate_research", json={"query": "pending work",
                                                                   "title": "Réport: «draft»"}).get_json()
    url = f"/tasks/{handle['task_id']}/report"
    assert handle["report_url"] == url
    busy = idle_client.get(f"{url}?format=pdf")
    assert busy.status_code == 409 and busy.get_json()["details"]["status"] == "pending"
    snapshot = idle_client.get(f"{url}?format=md&partial=1")
    assert snapshot.status_code == 200 and "still pending" in snapshot.get_data(as_text=True)
    assert idle_client.get(f"{url}?partial=perhaps").status_code == 400
    assert idle_client.post(f"/tasks/{handle['task_id']}/cancel").status_code == 202
    done = idle_client.get(f"{url}?format=html")
    assert "Partial report: the task was cancelled" in done.get_data(as_text=True)
    assert done.headers["Content-Disposition"] == (
        "inline; filename=\"Report-draft.html\"; filename*=UTF-8''R%C3%A9port-draft.html")


def test_mcp_lists_a_bounded_set_of_report_resources_and_reads_them_by_uri(client_with):
    from tests.mcp.test_mcp_http import initialize, rpc

    client = client_with(rate_limit_enabled=False)
    ids = [finished(client, "search", query=f"sqlite store {n}", num_agents=1)["task_id"] for n in range(12)]
    session = initialize(client).headers["Mcp-Session-Id"]
    listed = rpc(client, "resources/list", session=session).get_json()["result"]
    reports = [r for r in listed["resources"] if "/report." in r["uri"]]
    assert len(reports) == 40 and "nextCursor" not in listed  # the ten newest tasks, four formats each
    assert {r["uri"] for r in reports} == {f"orchestrator://tasks/{t}/report.{f}" for t in ids[2:]
                                           for f in ("md", "html", "pdf", "docx")}
    assert {r["mimeType"] for r in reports} == set(FORMAT_TYPES.values())
    oldest = rpc(client, "resources/read", {"uri": f"orchestrator://tasks/{ids[0]}/report.html"},
                 session=session).get_json()["result"]["contents"][0]
    assert oldest["mimeType"] == "text/html" and "text" in oldest and "blob" not in oldest
    assert_safe_html(oldest["text"])
    missing = rpc(client, "resources/read", {"uri": "orchestrator://tasks/search_nope/report.pdf"}, session=session)
    assert missing.get_json()["error"]["code"] == -32002
    unknown = rpc(client, "resources/read", {"uri": f"orchestrator://tasks/{ids[0]}/report.odt"}, session=session)
    assert unknown.get_json()["error"]["code"] == -32002


def test_a_running_tasks_partial_report_shows_its_finished_agents_from_the_checkpoints():
    from mcp.reports.snapshot import snapshot_result
    from mcp.store import TaskRecord
    from orchestration.models import AgentResult, Citation, to_dict

    passage = "Leases are renewed by the worker that holds the task every few seconds."
    done = AgentResult("agent_1", "sub_1", "research", "completed", f"{passage} [1]",
                       [Citation(1, "Leases", "https://leases.example/", "web", passage)])
    failed = AgentResult("agent_2", "sub_2", "research", "failed", "", [], error="boom")
    saved = {"plan": [{"subtask_id": "sub_1", "title": "How leases work", "query": "q"}],
             "agent:agent_1": to_dict(done), "agent:agent_2": to_dict(failed),
             "evidence:agent_1": {"https://leases.example": passage},
             "usage": {"llm_calls": 2, "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.001, "by_model": {}}}
    task = TaskRecord("research_run", "research", "how do leases work", None, {"provider": "extractive"},
                      status="running", created_at=1.0, started_at=1.0, progress=40)
    result = snapshot_result(task, saved)
    rep = build_report(result, task.params, running="running (40% done)")
    markdown = render(FORMATS["md"], rep).decode()
    assert "> **Partial report: the task is still running (40% done); this is what exists so far.**" in markdown
    assert "### How leases work" in markdown and "[\\[S1\\]](#source-s1)" in markdown
    assert "https://leases.example/" in markdown and "LLM calls: 2" in markdown
    assert result["citations"] == {"total": 1, "verified": 1, "dropped": 0}


def test_a_failed_task_with_no_text_and_no_sources_still_has_a_report_in_every_format(tmp_path):
    result = {"task_id": "search_f", "orchestrator": "search", "status": "failed", "query": "q\x01uery",
              "title": None, "final_synthesis": "", "sources": [], "error": "provider openai: 401", "partial": True}
    rep = build_report(result, {})
    assert rep.notice == "The task failed: provider openai: 401. What it found before failing is shown."
    for fmt in FORMATS.values():
        body = render(fmt, rep)
        assert body, fmt.name
    assert "No sources." in poppler("pdftotext", render(FORMATS["pdf"], rep), tmp_path)
    assert "The task failed" in render(FORMATS["md"], rep).decode()


FIRST_USE_PROBE = r"""
import json, sys
import mdurl._decode, mdurl._encode
from mcp.reports import FORMATS, render
from mcp.reports.document import build_report
from mcp.reports.html import parser

def tables():
    md = parser()
    rulers = {"core": md.core.ruler, "block": md.block.ruler, "inline": md.inline.ruler, "inline2": md.inline.ruler2}
    return {"encode": sorted(mdurl._encode.encode_cache), "decode": sorted(mdurl._decode.decode_cache),
            **{name: {chain: len(rules) for chain, rules in (r.__cache__ or {}).items()} for name, r in rulers.items()}}

before = tables()
body = ("# Fusion\n\nRanked lists [merge](https://example.org/a%20b?x=1#y) <https://example.org/c> [S1].\n\n"
        "> quoted\n\n1. one\n2. two\n\n| a | b |\n|---|---|\n| ~~c~~ | `d` |\n\n```python\nx = 1\n```\n")
report = build_report({"query": "q", "summary": body, "results": [{"title": "t", "url": "https://example.org/s",
                                                                  "snippet": "s"}]}, {})
for fmt in ("md", "html", "docx"):
    render(FORMATS[fmt], report)
print(json.dumps({"before": before, "after": tables()}))
"""


def test_the_markdown_parser_is_made_whole_at_import_so_threads_never_share_a_half_made_table():
    """markdown-it compiles its rule chains and mdurl its percent-encoding tables on first
    use, publishing each before it is filled: two threads of a worker making their first
    report at once read a half-made table (an IndexError seen as a 500 under load, or rules
    skipped). After import, rendering every kind of Markdown must make no table at all."""
    out = subprocess.run([sys.executable, "-c", FIRST_USE_PROBE], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    seen = json.loads(out.stdout)
    assert seen["before"]["encode"] and seen["before"]["decode"], seen
    assert all(seen["before"][r] for r in ("core", "block", "inline", "inline2")), seen
    assert seen["after"] == seen["before"]
