"""Builds providers and sources from Settings: the only place that knows which setting
configures which provider or source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestration.interfaces import Provider, SearchSource
from orchestration.pricing import PriceTable
from orchestration.providers import create_provider
from orchestration.sources import create_source

from .errors import ValidationError
from .settings import Settings


@dataclass(frozen=True)
class ChatService:
    """An OpenAI-compatible service: the setting holding its key and its default base URL."""

    key_field: str
    base_url: str
    module: str = "openai"


# design: order matters: LLM_PROVIDER=auto picks the first one that has a key.
CHAT_SERVICES: dict[str, ChatService] = {
    "openai": ChatService("openai_api_key", ""),
}


class Catalog:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.prices = PriceTable.load(settings.model_prices_file or None)
        self._sources: dict[str, SearchSource] | None = None

    # -- providers ------------------------------------------------------------------

    def provider_names(self) -> list[str]:
        return ["extractive", *CHAT_SERVICES]

    def resolve_provider(self, requested: str | None) -> str:
        name = (requested or self.settings.llm_provider or "auto").lower()
        if name == "auto":
            for candidate, service in CHAT_SERVICES.items():
                if getattr(self.settings, service.key_field):
                    return candidate
            return "extractive"
        if name not in self.provider_names():
            raise ValidationError(f"unknown provider {name!r}",
                                  {"fields": {"provider": [f"one of {', '.join(self.provider_names())}"]}})
        return name

    def provider(self, name: str, model: str | None = None) -> Provider:
        """A fresh provider for one task (its HTTP client lives on the task's loop)."""
        if name == "extractive":
            return create_provider("extractive")
        service = CHAT_SERVICES[name]
        s = self.settings
        base_url = getattr(s, f"{name}_base_url", "") or service.base_url
        return create_provider(
            service.module, api_key=getattr(s, service.key_field), base_url=base_url, name=name,
            model=model or s.llm_model, planner_model=s.planner_model, worker_model=s.worker_model,
            synthesis_model=s.synthesis_model,
        )

    # -- sources --------------------------------------------------------------------

    @property
    def sources(self) -> dict[str, SearchSource]:
        """Every registered source, enabled or not, built once per process."""
        if self._sources is None:
            data_dir = Path(self.settings.data_dir)
            self._sources = {
                "local": create_source("local", docs_dir=self.settings.docs_dir,
                                       index_path=data_dir / "docs_index.db"),
            }
        return self._sources

    def select_sources(self, names: list[str] | None) -> list[SearchSource]:
        if not names:
            return [s for s in self.sources.values() if s.enabled]
        unknown = [n for n in names if n not in self.sources]
        if unknown:
            raise ValidationError(f"unknown source {unknown[0]!r}",
                                  {"fields": {"sources": [f"unknown: {', '.join(unknown)}; "
                                                          f"known: {', '.join(sorted(self.sources))}"]}})
        disabled = [n for n in names if not self.sources[n].enabled]
        if disabled:
            raise ValidationError(f"source {disabled[0]!r} is disabled",
                                  {"fields": {"sources": [f"disabled: {', '.join(disabled)}"]}})
        return [self.sources[n] for n in names]
