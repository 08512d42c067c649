"""Citation bookkeeping: worker agents cite their own passages as [1]..[n]; the final
documents cite one task-wide list as [S1]..[Sn]. This module maps one onto the other and
makes sure every tag left in a text resolves to an entry in `sources`."""

from __future__ import annotations

import re

from .models import AgentResult, FoundBy, Source
from .ranking import normalize_url

LOCAL_TAG = re.compile(r"\[(\d{1,3})\]")
GLOBAL_TAG = re.compile(r"\[S(\d{1,4})\]")


def number_sources(results: list[AgentResult]) -> tuple[list[Source], dict[str, str]]:
    """One `sources` list over all agents' citations, in agent order then citation order,
    de-duplicated by URL, and each agent's content rewritten to cite `[S<n>]`.

    Deterministic in the agent results alone, so a resumed task numbers exactly as the
    original run would have."""
    sources: list[Source] = []
    by_url: dict[str, Source] = {}
    rewritten: dict[str, str] = {}
    for result in results:
        mapping: dict[int, str] = {}
        for citation in result.citations:
            key = normalize_url(citation.url)
            source = by_url.get(key)
            if source is None:
                source = Source(
                    id=f"S{len(sources) + 1}",
                    title=citation.title,
                    url=citation.url,
                    source=citation.source,
                    snippet=citation.snippet,
                    rank=len(sources) + 1,
                )
                sources.append(source)
                by_url[key] = source
            source.found_by.append(FoundBy(agent_id=result.agent_id, source=citation.source, rank=citation.ref))
            mapping[citation.ref] = source.id

        def to_global(match: re.Match[str], mapping: dict[int, str] = mapping) -> str:
            sid = mapping.get(int(match.group(1)))
            return f"[{sid}]" if sid else ""

        rewritten[result.agent_id] = LOCAL_TAG.sub(to_global, result.content)
    return sources, rewritten


def cited_ids(text: str) -> set[str]:
    return {f"S{m}" for m in GLOBAL_TAG.findall(text)}


def drop_unknown(text: str, valid: set[str]) -> tuple[str, int]:
    """Remove `[Sn]` tags that resolve to no source; returns the text and how many went."""
    dropped = 0

    def keep(match: re.Match[str]) -> str:
        nonlocal dropped
        if f"S{match.group(1)}" in valid:
            return match.group(0)
        dropped += 1
        return ""

    return GLOBAL_TAG.sub(keep, text), dropped


def sources_section(sources: list[Source], cited: set[str] | None = None) -> str:
    """The Markdown list closing a report: every source, or only the cited ones."""
    lines = ["## Sources", ""]
    for source in sources:
        if cited is None or source.id in cited:
            lines.append(f"- [{source.id}] {source.title} — {source.url}")
    return "\n".join(lines)
