"""Search source registry by name (CONVENTIONS 5); modules are imported when first used."""

from __future__ import annotations

import importlib
from typing import Any

from ..interfaces import SearchSource

SOURCES: dict[str, str] = {
    "local": "orchestration.sources.local:LocalDocsSource",
}


def source_names() -> list[str]:
    return sorted(SOURCES)


def create_source(registered: str, /, **config: Any) -> SearchSource:
    """Build the source registered as `registered` with its configuration."""
    module_name, class_name = SOURCES[registered].split(":")
    return getattr(importlib.import_module(module_name), class_name)(**config)
