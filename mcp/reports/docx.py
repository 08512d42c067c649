"""The report as a Word document (python-docx): real Heading styles (so Word's navigation
pane and table of contents see them), list styles, tables, monospace code, hyperlinks to
the web, and each `[Sn]` an internal link to the bookmark on its source's entry."""

from __future__ import annotations

import io
from typing import Any

from docx import Document
from docx.document import Document as DocxDocument
from docx.opc.constants import RELATIONSHIP_TYPE
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Pt, RGBColor
from docx.text.paragraph import Paragraph

from .document import Report, link_citations, safe_url
from .html import parser
from .markdown import sources_heading, sources_intro

MONO = "DejaVu Sans Mono"
LINK_COLOUR = "0645AD"


def bookmark_name(anchor: str) -> str:
    """Word bookmark names are letters, digits and underscores."""
    return anchor.replace("-", "_")


def add_hyperlink(paragraph: Paragraph, text: str, url: str | None = None, anchor: str | None = None) -> None:
    """A clickable run: to `url` (external) or to the bookmark `anchor` in this document."""
    link = OxmlElement("w:hyperlink")
    if url:
        link.set(qn("r:id"), paragraph.part.relate_to(url, RELATIONSHIP_TYPE.HYPERLINK, is_external=True))
    else:
        link.set(qn("w:anchor"), bookmark_name(anchor or ""))
    run = OxmlElement("w:r")
    props = OxmlElement("w:rPr")
    colour = OxmlElement("w:color")
    colour.set(qn("w:val"), LINK_COLOUR)
    underline = OxmlElement("w:u")
    underline.set(qn("w:val"), "single")
    props.append(colour)
    props.append(underline)
    run.append(props)
    node = OxmlElement("w:t")
    node.text = text
    node.set(qn("xml:space"), "preserve")
    run.append(node)
    link.append(run)
    paragraph._p.append(link)


def add_bookmark(paragraph: Paragraph, anchor: str, number: int) -> None:
    start = OxmlElement("w:bookmarkStart")
    start.set(qn("w:id"), str(number))
    start.set(qn("w:name"), bookmark_name(anchor))
    end = OxmlElement("w:bookmarkEnd")
    end.set(qn("w:id"), str(number))
    paragraph._p.insert(0, start)
    paragraph._p.append(end)


class _BodyWriter:
    """Walks markdown-it's tokens of the report body into the document."""

    def __init__(self, doc: DocxDocument):
        self.doc = doc
        self.lists: list[str] = []  # "bullet" | "ordered", innermost last
        self.item_started = False
        self.quote = 0
        self.table: list[list[list[Any]]] | None = None

    def write(self, tokens: list[Any]) -> None:
        pending: Paragraph | None = None
        for token in tokens:
            kind = token.type
            if kind == "heading_open":
                pending = self.doc.add_heading("", level=min(int(token.tag[1]), 9))
            elif kind == "paragraph_open":
                if self.table is None:
                    pending = self._paragraph()
            elif kind in ("bullet_list_open", "ordered_list_open"):
                self.lists.append("bullet" if kind == "bullet_list_open" else "ordered")
            elif kind in ("bullet_list_close", "ordered_list_close"):
                self.lists.pop()
            elif kind == "list_item_open":
                self.item_started = True
            elif kind == "blockquote_open":
                self.quote += 1
            elif kind == "blockquote_close":
                self.quote -= 1
            elif kind in ("fence", "code_block"):
                self._code(token.content)
            elif kind == "hr":
                self.doc.add_paragraph("* * *")
            elif kind == "table_open":
                self.table = []
            elif kind == "tr_open" and self.table is not None:
                self.table.append([])
            elif kind == "inline":
                if self.table is not None:
                    self.table[-1].append(token.children or [])
                elif pending is not None:
                    self.inline(pending, token.children or [])
                    pending = None
            elif kind == "table_close" and self.table is not None:
                self._table(self.table)
                self.table = None

    def _paragraph(self) -> Paragraph:
        if self.lists and self.item_started:
            self.item_started = False
            depth = min(len(self.lists), 3)
            base = "List Bullet" if self.lists[-1] == "bullet" else "List Number"
            return self.doc.add_paragraph(style=base if depth == 1 else f"{base} {depth}")
        if self.quote:
            return self.doc.add_paragraph(style="Quote")
        return self.doc.add_paragraph()

    def _code(self, text: str) -> None:
        paragraph = self.doc.add_paragraph()
        lines = text.rstrip("\n").split("\n")
        for i, line in enumerate(lines):
            run = paragraph.add_run(line)
            run.font.name = MONO
            run.font.size = Pt(9)
            if i < len(lines) - 1:
                run.add_break()

    def _table(self, rows: list[list[list[Any]]]) -> None:
        columns = max((len(r) for r in rows), default=0)
        if not columns:
            return
        table = self.doc.add_table(rows=len(rows), cols=columns)
        table.style = "Table Grid"
        for r, row in enumerate(rows):
            for c, children in enumerate(row):
                paragraph = table.cell(r, c).paragraphs[0]
                self.inline(paragraph, children, bold=r == 0)

    def inline(self, paragraph: Paragraph, children: list[Any], bold: bool = False) -> None:
        style = {"strong": bold, "em": False, "s": False}
        link: str | None = None
        link_text: list[str] = []
        for child in children:
            kind = child.type
            if kind in ("strong_open", "em_open", "s_open"):
                style[kind[:-5]] = True
            elif kind in ("strong_close", "em_close", "s_close"):
                style[kind[:-6]] = bold if kind == "strong_close" else False
            elif kind == "link_open":
                link, link_text = str(child.attrs.get("href") or ""), []
            elif kind == "link_close":
                self._link(paragraph, "".join(link_text), link or "")
                link = None
            elif link is not None:
                link_text.append(child.content if kind in ("text", "code_inline") else " ")
            elif kind == "text":
                run = paragraph.add_run(child.content)
                run.bold, run.italic = style["strong"], style["em"]
                run.font.strike = style["s"]
            elif kind == "code_inline":
                run = paragraph.add_run(child.content)
                run.font.name = MONO
            elif kind == "softbreak":
                paragraph.add_run(" ")
            elif kind == "hardbreak":
                paragraph.add_run().add_break()
            elif kind == "image":
                paragraph.add_run(child.content)

    @staticmethod
    def _link(paragraph: Paragraph, text: str, href: str) -> None:
        if href.startswith("#") and len(href) > 1:
            add_hyperlink(paragraph, text, anchor=href[1:])
        elif safe_url(href):
            add_hyperlink(paragraph, text, url=safe_url(href))
        else:
            paragraph.add_run(text)


def render(report: Report) -> bytes:
    doc = Document()
    props = doc.core_properties
    props.title, props.subject, props.author = report.title[:255], report.query[:255], "mcp-orchestrator"
    props.keywords = f"{report.orchestrator} report"
    props.comments = f"task {report.task_id}"
    doc.add_heading(report.title, level=1)
    facts = doc.add_paragraph()
    for i, (label, value) in enumerate(report.facts()):
        facts.add_run(f"{label}: ").bold = True
        facts.add_run(value)
        if i < len(report.facts()) - 1:
            facts.add_run().add_break()
    if report.notice:
        notice = doc.add_paragraph(style="Intense Quote")
        run = notice.add_run(report.notice)
        run.bold = True
        run.font.color.rgb = RGBColor(0x99, 0x55, 0x00)
    writer = _BodyWriter(doc)
    if report.body:
        writer.write(parser().parse(link_citations(report.body, report.known_ids)))
    else:
        doc.add_paragraph("No report text.").runs[0].italic = True
    doc.add_heading(sources_heading(report), level=2)
    doc.add_paragraph(sources_intro(report))
    for s in report.sources:
        entry = doc.add_paragraph(style="List Paragraph")
        add_bookmark(entry, s.anchor, s.number)
        entry.add_run(f"{s.number}. [{s.id}] ").bold = True
        if s.link:
            add_hyperlink(entry, s.title, url=s.link)
        else:
            entry.add_run(s.title)
        entry.add_run().add_break()
        entry.add_run(s.url).font.size = Pt(9)
        entry.add_run().add_break()
        meta = f"source: {s.source}" + (f"; found by: {s.found_by_text()}" if s.found_by else "")
        entry.add_run(meta).font.size = Pt(9)
        if s.snippet:
            entry.add_run().add_break()
            snippet = entry.add_run(s.snippet[:400])
            snippet.italic = True
            snippet.font.size = Pt(9)
    if not report.sources:
        doc.add_paragraph("No sources.")
    doc.add_heading("Citation verification", level=2)
    doc.add_paragraph(report.verification())
    doc.add_heading("Usage and cost", level=2)
    for line in report.usage_lines():
        doc.add_paragraph(line, style="List Bullet")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()
