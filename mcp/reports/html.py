"""The report as one standalone HTML page: the download, what the console shows, and what
the PDF is printed from (its print stylesheet is the PDF's layout).

The body is Markdown rendered by markdown-it-py with raw HTML off, then sanitised by nh3
(an allowlist of tags and attributes; links http, https, mailto, relative or fragments).
Everything else on the page is escaped here. No script, no event handler, no image and no
external resource ever reaches the page."""

from __future__ import annotations

from html import escape
from typing import Any

import nh3
from markdown_it import MarkdownIt

from .. import __version__
from .document import Report, link_citations, safe_href
from .markdown import sources_heading, sources_intro

BODY_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "blockquote", "ul", "ol", "li", "strong", "em", "s",
    "del", "code", "pre", "a", "table", "thead", "tbody", "tr", "th", "td",
}
BODY_ATTRIBUTES: dict[str, set[str]] = {"a": {"href", "title"}, "ol": {"start"}}

STYLE = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; font-size: 11pt; line-height: 1.5;
       color: #1b1b1b; margin: 0 auto; max-width: 48rem; padding: 1.5rem; }
h1 { font-size: 1.7em; margin: 0 0 .4em; line-height: 1.2; }
h2 { font-size: 1.3em; margin: 1.4em 0 .5em; border-bottom: 1px solid #ccc; padding-bottom: .15em; }
h3 { font-size: 1.1em; margin: 1.2em 0 .4em; }
h4, h5, h6 { font-size: 1em; margin: 1em 0 .3em; }
a { color: #0645ad; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .9em; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: .6em .8em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
pre code { background: none; padding: 0; }
blockquote { margin: .8em 0; padding: .1em 1em; border-left: 4px solid #ccc; color: #444; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #bbb; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: 0 0 1em;
         font-size: .92em; color: #333; }
.facts dt { font-weight: bold; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.notice { border: 2px solid #c77700; background: #fff4e0; padding: .5em .8em; font-weight: bold; }
.sources ol { padding-left: 2em; }
.sources li { margin: 0 0 .6em; overflow-wrap: anywhere; }
.sources .sid { font-weight: bold; }
.sources .url, .sources .meta, .sources .snippet { display: block; font-size: .88em; color: #444; }
.sources .snippet { font-style: italic; }
.citation { text-decoration: none; font-size: .8em; vertical-align: super; line-height: 1; }
@page { size: A4; margin: 2cm 1.8cm 2.2cm;
        @bottom-center { content: counter(page) " / " counter(pages); font-size: 9pt; color: #666; } }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  a { color: #0645ad; text-decoration: none; }
  h1, h2, h3, h4 { break-after: avoid; }
  pre, blockquote, table, .sources li { break-inside: avoid; }
  .report-body a[href^="http"]::after { content: " <" attr(href) ">"; font-size: .85em; color: #555;
                                         overflow-wrap: anywhere; }
}
"""


def _build_parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.validateLink = safe_href
    # design: markdown-it compiles its rule chains, and mdurl its percent-encoding tables, on
    # first use, and publishes each before it is filled. Two threads of one worker making
    # their first report at once read a half-made table: an IndexError (a 500), or a rule
    # chain missing rules (wrong HTML). One render here, while the import lock holds every
    # other thread off this module, makes them all before any request can.
    md.render("# w\n\n*a* [b](https://example.org/p%41?q=1#f) <https://example.org/%62>\n\n"
              "> q\n\n- i\n\n| h |\n|---|\n| ~~d~~ |\n\n```\nc\n```\n")
    return md


_PARSER = _build_parser()


def parser() -> MarkdownIt:
    """The one Markdown parser, made and warmed at import (safe to share between threads)."""
    return _PARSER


def body_html(report: Report) -> str:
    """The report's own text as sanitised HTML, citations linked to their sources."""
    rendered = parser().render(link_citations(report.body, report.known_ids))
    rendered = rendered.replace('<a href="#source-', '<a class="citation" href="#source-')
    return nh3.clean(rendered, tags=BODY_TAGS, attributes=BODY_ATTRIBUTES,
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow",
                     allowed_classes={"a": {"citation"}, "code": {f"language-{x}" for x in _LANGS}})


_LANGS = ("python", "bash", "sh", "json", "yaml", "toml", "sql", "javascript", "typescript", "go", "rust", "c",
          "cpp", "java", "html", "css", "text", "console", "ini", "dockerfile", "diff")


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def render(report: Report) -> str:
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in report.facts())
    notice = f'<p class="notice" role="note">{_e(report.notice)}</p>' if report.notice else ""
    body = body_html(report) if report.body else "<p><em>No report text.</em></p>"
    items = []
    for s in report.sources:
        title = f'<a href="{_e(s.link)}" rel="noopener noreferrer nofollow">{_e(s.title)}</a>' if s.link \
            else _e(s.title)
        meta = f"source: {_e(s.source)}" + (f"; found by: {_e(s.found_by_text())}" if s.found_by else "")
        snippet = f'<span class="snippet">{_e(s.snippet[:400])}</span>' if s.snippet else ""
        items.append(f'<li id="{_e(s.anchor)}"><span class="sid">[{_e(s.id)}]</span> {title}'
                     f'<span class="url">{_e(s.url)}</span><span class="meta">{meta}</span>{snippet}</li>')
    sources = f"<ol>{''.join(items)}</ol>" if items else "<p><em>No sources.</em></p>"
    usage = "".join(f"<li>{_e(line)}</li>" for line in report.usage_lines())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(report.title)}</title>
<meta name="description" content="{_e(report.query)}">
<meta name="author" content="mcp-orchestrator">
<meta name="generator" content="mcp-orchestrator {_e(__version__)}">
<meta name="keywords" content="{_e(report.orchestrator)} report">
<style>{STYLE}</style>
</head>
<body>
<article class="report">
<header>
<h1>{_e(report.title)}</h1>
<dl class="facts">{facts}</dl>
{notice}
</header>
<section class="report-body">
{body}
</section>
<section class="sources">
<h2>{_e(sources_heading(report))}</h2>
<p>{_e(sources_intro(report))}</p>
{sources}
</section>
<section class="verification">
<h2>Citation verification</h2>
<p>{_e(report.verification())}</p>
</section>
<section class="usage">
<h2>Usage and cost</h2>
<ul>{usage}</ul>
</section>
</article>
</body>
</html>
"""
