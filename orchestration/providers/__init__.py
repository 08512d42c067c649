"""Provider registry by name (CONVENTIONS 5); modules are imported when first used."""

from __future__ import annotations

import importlib
from typing import Any

from ..interfaces import Provider

PROVIDERS: dict[str, str] = {
    "extractive": "orchestration.providers.extractive:ExtractiveProvider",
    "openai": "orchestration.providers.openai_compat:OpenAIProvider",
}


def provider_names() -> list[str]:
    return sorted(PROVIDERS)


def create_provider(registered: str, /, **config: Any) -> Provider:
    """Build the provider registered as `registered` with its configuration."""
    module_name, class_name = PROVIDERS[registered].split(":")
    return getattr(importlib.import_module(module_name), class_name)(**config)
