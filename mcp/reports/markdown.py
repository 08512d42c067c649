"""The report as a Markdown file: what a person reads in an editor or pastes into a wiki."""

from __future__ import annotations

from .document import Report, link_citations, md_escape


def sources_heading(report: Report) -> str:
    return "Ranked results" if report.orchestrator == "search" else "Sources"


def sources_intro(report: Report) -> str:
    if report.orchestrator == "search":
        return ("Every result the agents found, fused by reciprocal rank and de-duplicated by URL; "
                "\"found by\" names each agent that found it, with its source and rank.")
    return "Every source the worker agents cited, numbered as the report cites them."


def render(report: Report) -> str:
    lines = [f"# {md_escape(report.title)}", ""]
    for label, value in report.facts():
        lines.append(f"- **{label}:** {md_escape(value)}")
    lines.append("")
    if report.notice:
        lines += [f"> **{md_escape(report.notice)}**", ""]
    body = link_citations(report.body, report.known_ids)
    lines += [body or "_No report text._", ""]
    lines += [f"## {sources_heading(report)}", "", sources_intro(report), ""]
    for s in report.sources:
        title = md_escape(s.title)
        url = f"[{md_escape(s.url)}](<{s.link}>)" if s.link else md_escape(s.url)
        lines.append(f"{s.number}. <a id=\"{s.anchor}\"></a>**[{s.id}]** {title} — {url}  ")
        detail = f"source: {md_escape(s.source)}"
        if s.found_by:
            detail += f"; found by: {md_escape(s.found_by_text())}"
        lines.append(f"   {detail}")
    if not report.sources:
        lines.append("_No sources._")
    lines += ["", "## Citation verification", "", report.verification(), "",
              "## Usage and cost", ""]
    lines += [f"- {md_escape(line)}" for line in report.usage_lines()]
    return "\n".join(lines) + "\n"
