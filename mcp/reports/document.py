"""What every report format shows, built once from a result document (DESIGN §7, §13):
the report's metadata, its Markdown body made safe, and the numbered sources list.

Untrusted text (the report an LLM wrote, source titles, snippets and URLs found on the
web) is neutralised here, before any renderer sees it: raw HTML in the body is escaped,
links with a scheme other than http, https or mailto are dropped, and a source URL is only
ever a link when it is http(s)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from orchestration.citations import GLOBAL_TAG

SAFE_SCHEMES = ("http", "https", "mailto")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")
# Characters no XML document (DOCX, the PDF's text) may hold; dropped from every text.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
# An inline link's destination and a link reference definition's, as CommonMark writes them.
_INLINE_DEST = re.compile(r"\]\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)")
_REF_DEF = re.compile(r"^( {0,3}\[[^\]\n]+\]:\s*)(<[^>\n]*>|\S+)", re.M)
_LEADING_TITLE = re.compile(r"\A\s*# [^\n]*\n+")
_SOURCES_TAIL = re.compile(r"\n## Sources[ \t]*\n(?:(?!\n#{1,2} )[\s\S])*\Z")


def safe_url(url: Any) -> str | None:
    """`url` when it is an absolute http(s) or mailto URL (a link we may show), else None."""
    if not isinstance(url, str):
        return None
    cleaned = _CONTROL.sub("", html.unescape(url))
    match = _SCHEME.match(cleaned)
    if not match or match.group(1).lower() not in SAFE_SCHEMES:
        return None
    # design: characters that could end a Markdown link or an attribute are percent-encoded;
    # those a URL may hold as they are stay, and existing %XX escapes are kept.
    return quote(url.strip(), safe=":/?#[]@!$&'()*+,;=%~")


def safe_href(url: str) -> bool:
    """A link target a document may carry: a safe absolute URL, a fragment, or a relative
    path (no scheme at all)."""
    cleaned = _CONTROL.sub("", html.unescape(url)).strip("<>")
    if cleaned.startswith("#"):
        return True
    if _SCHEME.match(cleaned):
        return safe_url(cleaned) is not None
    return not cleaned.startswith("//")


def anchor(source_id: str) -> str:
    """The id of a source's entry in every format (`#source-s3`)."""
    return f"source-{source_id.lower()}"


@dataclass
class SourceEntry:
    id: str
    number: int
    title: str
    url: str
    link: str | None  # the URL when it is safe to link to
    source: str
    snippet: str
    found_by: list[dict[str, Any]] = field(default_factory=list)
    score: float = 0.0
    cited: bool = False

    @property
    def anchor(self) -> str:
        return anchor(self.id)

    def found_by_text(self) -> str:
        return ", ".join(f"{f.get('agent_id', '?')} via {f.get('source', '?')} (rank {f.get('rank', '?')})"
                         for f in self.found_by)


@dataclass
class Report:
    task_id: str
    title: str
    query: str
    orchestrator: str
    status: str
    date: str
    provider: str
    models: list[str]
    body: str  # Markdown; raw HTML escaped, unsafe links neutralised, [Sn] still plain
    sources: list[SourceEntry]
    citations: dict[str, int]
    usage: dict[str, Any]
    budget: dict[str, Any]
    execution_time: float
    notice: str | None  # why a partial report stopped, or why there is none

    @property
    def known_ids(self) -> set[str]:
        return {s.id for s in self.sources}

    def facts(self) -> list[tuple[str, str]]:
        """The metadata lines shown under the title, in every format."""
        models = ", ".join(self.models) or "none"
        return [
            ("Query", self.query),
            ("Date", self.date),
            ("Orchestrator", f"{self.orchestrator} ({self.status})"),
            ("Provider", self.provider),
            ("Models", models),
            ("Task", self.task_id),
        ]

    def verification(self) -> str:
        c = self.citations or {}
        total, verified, dropped = c.get("total", 0), c.get("verified", 0), c.get("dropped", 0)
        if not total:
            return "No citation in the text needed checking."
        return (f"{verified} of {total} citations were checked against the text of their source and kept; "
                f"{dropped} unsupported citation{'s' if dropped != 1 else ''} removed.")

    def usage_lines(self) -> list[str]:
        u = self.usage or {}
        lines = [f"LLM calls: {u.get('llm_calls', 0)}; input tokens: {u.get('input_tokens', 0)}; "
                 f"output tokens: {u.get('output_tokens', 0)}; cost: ${float(u.get('cost_usd') or 0):.4f}; "
                 f"run time: {self.execution_time:.1f} s."]
        for model, m in sorted((u.get("by_model") or {}).items()):
            lines.append(f"{model}: {int(m.get('llm_calls', 0))} calls, {int(m.get('input_tokens', 0))} in, "
                         f"{int(m.get('output_tokens', 0))} out, ${float(m.get('cost_usd') or 0):.4f}")
        b = self.budget or {}
        if b.get("max_cost_usd") is not None or b.get("max_tokens") is not None:
            lines.append(f"Budget: max cost {b.get('max_cost_usd')}, max tokens {b.get('max_tokens')}"
                         f"{' (exhausted)' if b.get('exhausted') else ''}.")
        return lines


def build_report(result: dict[str, Any], params: dict[str, Any] | None = None, running: str | None = None) -> Report:
    """The report of a result document. `params` are the task's parameters (provider and
    model asked for); `running` is set for a snapshot of a task still running (its status
    line), so the notice says so."""
    params = params or {}
    sources = [_source_entry(i, s) for i, s in enumerate(result.get("sources") or [], start=1)]
    body = clean_markdown(_report_body(result.get("final_synthesis") or ""))
    cited = {f"S{n}" for n in GLOBAL_TAG.findall(body)}
    for entry in sources:
        entry.cited = entry.id in cited
    usage = result.get("usage") or {}
    models = sorted((usage.get("by_model") or {}).keys()) or ([params["model"]] if params.get("model") else [])
    when = result.get("completed_at") or result.get("created_at") or time.time()
    return Report(
        task_id=str(result.get("task_id", "")),
        title=_one_line(result.get("title") or result.get("query") or "Report"),
        query=_one_line(result.get("query") or ""),
        orchestrator=str(result.get("orchestrator", "")),
        status=str(result.get("status", "")),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(float(when))),
        provider=str(params.get("provider") or "default"),
        models=models,
        body=body,
        sources=sources,
        citations=result.get("citations") or {},
        usage=usage,
        budget=result.get("budget") or {},
        execution_time=float(result.get("execution_time") or 0.0),
        notice=_notice(result, running),
    )


def _one_line(text: Any) -> str:
    return " ".join(_NOT_XML.sub("", str(text)).split())


def _source_entry(number: int, s: dict[str, Any]) -> SourceEntry:
    url = _one_line(s.get("url") or "")
    return SourceEntry(
        id=_one_line(s.get("id") or f"S{number}"), number=number, title=_one_line(s.get("title") or url or "untitled"),
        url=url, link=safe_url(url), source=_one_line(s.get("source") or ""), snippet=_one_line(s.get("snippet") or ""),
        found_by=[f for f in s.get("found_by") or [] if isinstance(f, dict)], score=float(s.get("score") or 0.0),
    )


def _report_body(text: str) -> str:
    """The orchestrator's Markdown without its own title line and its short sources list:
    the document has a title block and a fuller sources list of its own."""
    text = _LEADING_TITLE.sub("", _NOT_XML.sub("", text.replace("\r\n", "\n")), count=1)
    return _SOURCES_TAIL.sub("\n", text).strip()


def _notice(result: dict[str, Any], running: str | None) -> str | None:
    if running:
        return f"Partial report: the task is still {running}; this is what exists so far."
    status = result.get("status")
    error = _one_line(result.get("error") or "")
    budget = result.get("budget") or {}
    if status == "failed":
        return f"The task failed{': ' + error if error else ''}. What it found before failing is shown."
    if status == "cancelled":
        return "Partial report: the task was cancelled before it finished."
    if budget.get("exhausted"):
        return "Partial report: the task's budget (max_cost_usd / max_tokens) ran out before it finished."
    if result.get("partial"):
        return f"Partial report: the task stopped early{': ' + error if error else ''}."
    return None


# -- Markdown made safe ------------------------------------------------------------------


def segments(text: str) -> Iterator[tuple[bool, str]]:
    """(is_code, chunk) over `text`: fenced code blocks and inline code spans are code."""
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence:
            marker = fence.group(1)
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].strip().startswith(marker[0] * len(marker))
                        and set(lines[j].strip()) == {marker[0]}), len(lines) - 1)
            if prose:
                yield from _spans("\n".join(prose) + "\n")
                prose = []
            block = "\n".join(lines[i:end + 1])
            yield True, block + ("\n" if end + 1 < len(lines) else "")
            i = end + 1
            continue
        prose.append(lines[i])
        i += 1
    if prose:
        yield from _spans("\n".join(prose))


def _spans(text: str) -> Iterator[tuple[bool, str]]:
    last = 0
    for match in _CODE_SPAN.finditer(text):
        if match.start() > last:
            yield False, text[last:match.start()]
        yield True, match.group(0)
        last = match.end()
    if last < len(text):
        yield False, text[last:]


def _neutralise_dest(dest: str) -> str:
    bare = dest[1:-1] if dest.startswith("<") and dest.endswith(">") else dest
    return dest if safe_href(bare) else "#"


def clean_markdown(text: str) -> str:
    """Markdown whose raw HTML shows as text and whose links are http(s), mailto, relative
    or fragments only, in any renderer that reads it."""
    out = []
    for is_code, chunk in segments(text):
        if not is_code:
            chunk = _INLINE_DEST.sub(lambda m: "](" + _neutralise_dest(m.group(1)), chunk)
            chunk = _REF_DEF.sub(lambda m: m.group(1) + _neutralise_dest(m.group(2)), chunk)
            chunk = chunk.replace("<", "&lt;")
        out.append(chunk)
    return "".join(out)


def link_citations(text: str, known: set[str]) -> str:
    """Each `[Sn]` naming a known source becomes a Markdown link to its entry."""
    def link(match: re.Match[str]) -> str:
        sid = f"S{match.group(1)}"
        return f"[\\[{sid}\\]](#{anchor(sid)})" if sid in known else match.group(0)

    return "".join(chunk if is_code else GLOBAL_TAG.sub(link, chunk) for is_code, chunk in segments(text))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: str) -> str:
    """Plain text as Markdown that shows exactly that text (no markup, no HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", text.replace("&", "&amp;").replace("<", "&lt;"))
