"""Provider registry by name (CONVENTIONS 5); modules are imported when first used."""

from __future__ import annotations

from typing import Any

from ..interfaces import Provider
from ..registry import build

PROVIDERS: dict[str, str] = {
    "extractive": "orchestration.providers.extractive:ExtractiveProvider",
    "openai": "orchestration.providers.openai_compat:OpenAIProvider",
    "anthropic": "orchestration.providers.anthropic_messages:AnthropicProvider",
}


def provider_names() -> list[str]:
    return sorted(PROVIDERS)


def create_provider(registered: str, /, **config: Any) -> Provider:
    """Build the provider registered as `registered` with its configuration."""
    return build(PROVIDERS, registered, **config)
