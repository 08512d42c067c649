"""Search source registry by name (CONVENTIONS 5); modules are imported when first used."""

from __future__ import annotations

from typing import Any

from ..interfaces import SearchSource
from ..registry import build

SOURCES: dict[str, str] = {
    "local": "orchestration.sources.local:LocalDocsSource",
    "wikipedia": "orchestration.sources.wikipedia:WikipediaSource",
    "arxiv": "orchestration.sources.arxiv:ArxivSource",
    "web": "orchestration.sources.web:WebSource",
    "github": "orchestration.sources.github:GitHubSource",
    "hackernews": "orchestration.sources.hackernews:HackerNewsSource",
    "semantic_scholar": "orchestration.sources.semantic_scholar:SemanticScholarSource",
}


def source_names() -> list[str]:
    return sorted(SOURCES)


def create_source(registered: str, /, **config: Any) -> SearchSource:
    """Build the source registered as `registered` with its configuration."""
    return build(SOURCES, registered, **config)
