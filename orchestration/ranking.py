"""Reciprocal rank fusion with URL de-duplication and provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .models import FoundBy, Hit, Source

RRF_K = 60
TRACKING_PARAMS = frozenset({"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid", "ref", "ref_src", "igshid"})


def normalize_url(url: str) -> str:
    """The key two URLs share when they name the same page: scheme-less, lower-case host
    without `www.`, no trailing slash, no tracking parameters, no fragment on web URLs.
    Non-web URLs (local documents) keep their fragment, which names a section."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        return url.strip()
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    if parts.port and parts.port not in (80, 443):
        host = f"{host}:{parts.port}"
    path = parts.path.rstrip("/")
    query = urlencode(
        sorted(
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS
        )
    )
    return urlunsplit(("", host, path, query, ""))


@dataclass
class RankedList:
    """One agent's results from one source, best first."""

    agent_id: str
    source: str
    hits: list[Hit]
    pass_number: int = 1  # search depth 2: the query-expansion pass is 2


def passage_key(hit: Hit) -> tuple[str, Any]:
    """What tells two passages apart: their page, and the chunk of it when the source cuts a
    long section into several (metadata `chunk`; a second chunk of a page is new evidence)."""
    return normalize_url(hit.url), hit.metadata.get("chunk")


def fuse(lists: list[RankedList], limit: int, k: int = RRF_K) -> list[Source]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank). The first
    hit seen for a URL gives the entry its title and snippet; every list that found it is
    kept in `found_by` (a list holding several chunks of one page counts its best rank).
    Ties keep first-seen order, so fusion is deterministic."""
    entries: dict[str, Source] = {}
    for ranked in lists:
        counted: set[str] = set()
        for rank, hit in enumerate(ranked.hits, start=1):
            key = normalize_url(hit.url)
            if key in counted:
                continue
            counted.add(key)
            entry = entries.get(key)
            if entry is None:
                entry = Source(id="", title=hit.title, url=hit.url, source=hit.source, snippet=hit.snippet)
                entries[key] = entry
            entry.score += 1.0 / (k + rank)
            entry.found_by.append(FoundBy(agent_id=ranked.agent_id, source=ranked.source, rank=rank,
                                          pass_number=ranked.pass_number))
    ordered = sorted(entries.values(), key=lambda e: -e.score)[:limit]
    for position, entry in enumerate(ordered, start=1):
        entry.rank = position
        entry.id = f"S{position}"
        entry.score = round(entry.score, 6)
    return ordered


def fuse_hits(lists: list[RankedList], limit: int, k: int = RRF_K) -> list[Hit]:
    """RRF over hit lists by passage (`passage_key`): the first-seen Hit of each, with its
    text; two chunks of one page are two passages. Ties keep first-seen order."""
    by_key: dict[tuple[str, Any], Hit] = {}
    scores: dict[tuple[str, Any], float] = {}
    for ranked in lists:
        for rank, hit in enumerate(ranked.hits, start=1):
            key = passage_key(hit)
            by_key.setdefault(key, hit)
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    ordered = sorted(by_key, key=lambda key: -scores[key])  # stable: ties keep first-seen order
    return [by_key[key] for key in ordered[:limit]]
