"""Citation bookkeeping: worker agents cite their own passages as [1]..[n]; the final
documents cite one task-wide list as [S1]..[Sn]. This module maps one onto the other and
makes sure every tag left in a text resolves to an entry in `sources`."""

from __future__ import annotations

import re

from .models import AgentResult, FoundBy, Hit, Source
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


# design: the share of a claim's content words its source must contain. Extractive
# sentences score near 1, faithful paraphrases about 0.4-0.7; a claim the source never
# makes shares little beyond its topic word, well under 0.3.
MIN_SUPPORT = 0.3
# design: a "claim" of one or two content words ("See [S2].", "Merged findings [S1].") is a
# pointer, not a statement an overlap score can judge; it is kept.
MIN_CLAIM_WORDS = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])(?:\s*\[S\d{1,4}\])*\s+(?=[\"'(\[]?[A-Z0-9`*])")


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence-like span: lines cut at sentence ends, a citation tag
    after a full stop kept with the sentence it closes."""
    spans, offset = [], 0
    for line in text.split("\n"):
        start = 0
        for match in _SENTENCE_END.finditer(line):
            end = match.start() + len(match.group(0).rstrip())
            spans.append((offset + start, offset + end))
            start = match.end()
        spans.append((offset + start, offset + len(line)))
        offset += len(line) + 1
    return spans


def verify_citations(text: str, evidence: dict[str, str],
                     min_support: float = MIN_SUPPORT) -> tuple[str, dict[str, int]]:
    """Check every `[Sn]` against the text of source Sn: the sentence it closes must share
    at least `min_support` of its content words with that text (orchestration.text.overlap).
    Unsupported tags, and tags naming no source, are dropped; a claim too short to judge
    (under MIN_CLAIM_WORDS content words) keeps a tag that names a source. Returns the text and
    `{total, verified, dropped}`."""
    from .text import overlap, tokenize

    drop: list[tuple[int, int]] = []
    total = 0
    for start, end in _sentences(text):
        sentence = text[start:end]
        claim = GLOBAL_TAG.sub(" ", sentence)
        judged = len(set(tokenize(claim))) >= MIN_CLAIM_WORDS
        for match in GLOBAL_TAG.finditer(sentence):
            total += 1
            source_text = evidence.get(f"S{match.group(1)}")
            if source_text is None or (judged and overlap(claim, source_text) < min_support):
                drop.append((start + match.start(), start + match.end()))
    for start, end in reversed(drop):
        if end == len(text) or text[end] in ".,;:!?\n":
            while start > 0 and text[start - 1] in " \t":
                start -= 1  # no space left before the sentence's full stop
        text = text[:start] + text[end:]
    return text, {"total": total, "verified": total - len(drop), "dropped": len(drop)}


def passage_text(hit: Hit) -> str:
    """What a hit says, as citation verification reads it: title, snippet and passage."""
    return " ".join(part for part in (hit.title + ".", hit.snippet, hit.text) if part)


def evidence_for(sources: list[Source], by_url: dict[str, str]) -> dict[str, str]:
    """Source id -> the text its citations are checked against: the passages kept by URL,
    else (a resumed task that lost them) the source's own title and snippet."""
    return {s.id: by_url.get(normalize_url(s.url)) or f"{s.title}. {s.snippet}" for s in sources}
