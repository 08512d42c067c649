"""Builds providers and sources from Settings: the only place that knows which setting
configures which provider or source."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration.fetch import PageFetcher
from orchestration.interfaces import Provider, SearchSource
from orchestration.pricing import PriceTable
from orchestration.providers import create_provider
from orchestration.providers.resilience import Governor, RetryPolicy
from orchestration.sources import create_source
from orchestration.webclient import HttpClients, MemoryCache, ResponseCache

from . import SERVICE_NAME, __version__
from .cache import StoreCache
from .errors import ValidationError
from .settings import Settings
from .store import Store

USER_AGENT = f"{SERVICE_NAME}/{__version__} (research orchestrator; polite API client)"


@dataclass(frozen=True)
class ChatService:
    """A chat-model service: the provider module speaking its API, the setting holding its
    key, its default base URL and model, the setting overriding that URL (with the path the
    API lives under), and extra options of the provider module."""

    module: str
    key_field: str
    base_url: str
    default_model: str
    url_field: str = ""
    url_suffix: str = ""
    options: tuple[tuple[str, Any], ...] = ()


# design: services without OpenAI's structured outputs get JSON mode; the planner's prompt
# carries the shape and its answer is validated either way.
JSON_MODE = (("json_mode", "json_object"),)

# design: order matters: LLM_PROVIDER=auto picks the first one that has a key.
CHAT_SERVICES: dict[str, ChatService] = {
    "openai": ChatService("openai", "openai_api_key", "https://api.openai.com/v1", "gpt-4o-mini",
                          url_field="openai_base_url"),
    "anthropic": ChatService("anthropic", "anthropic_api_key", "https://api.anthropic.com", "claude-haiku-4-5",
                             url_field="anthropic_base_url"),
    "xai": ChatService("openai", "xai_api_key", "https://api.x.ai/v1", "grok-3-mini"),
    "groq": ChatService("openai", "groq_api_key", "https://api.groq.com/openai/v1", "llama-3.3-70b-versatile",
                        options=JSON_MODE),
    "mistral": ChatService("openai", "mistral_api_key", "https://api.mistral.ai/v1", "mistral-small-latest",
                           options=JSON_MODE),
    "openrouter": ChatService("openai", "openrouter_api_key", "https://openrouter.ai/api/v1", "openai/gpt-4o-mini",
                              options=JSON_MODE),
    # Ollama needs no key: OLLAMA_HOST set is what configures it (for `auto` too).
    "ollama": ChatService("openai", "ollama_host", "http://127.0.0.1:11434", "llama3.2", url_field="ollama_host",
                          url_suffix="/v1", options=(*JSON_MODE, ("account_prefix", "ollama/"))),
}


class Catalog:
    # Each source's latest failure, shared by every worker through the store for /health.
    SOURCE_ERROR_KEY = "source_error:{}"
    SOURCE_ERROR_TTL = 7 * 86400.0

    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store = store
        # design: with a store, every worker shares cached search answers; without one
        # (a bare Catalog in a script) each process keeps its own.
        self.cache: ResponseCache = StoreCache(store) if store is not None else MemoryCache()
        self.http = HttpClients(user_agent=USER_AGENT)
        self.prices = PriceTable.load(settings.model_prices_file or None)
        self.retry = RetryPolicy(attempts=settings.llm_max_attempts, max_seconds=settings.llm_retry_max_seconds)
        self._governors: dict[str, Governor] = {}
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
        service = CHAT_SERVICES.get(name)
        if (requested and service and name != self.settings.llm_provider.lower()
                and not getattr(self.settings, service.key_field)):
            variable = service.key_field.upper()
            raise ValidationError(f"provider {name!r} is not configured",
                                  {"fields": {"provider": [f"{name} needs {variable}"]}})
        return name

    def provider(self, name: str, model: str | None = None) -> Provider:
        """A fresh provider for one task (its HTTP client lives on the task's loop), sharing
        this process's governor of that provider.

        Models: a per-call `model` is used for every role; else, for the configured default
        provider, LLM_MODEL and PLANNER_/WORKER_/SYNTHESIS_MODEL; else the service's default
        (those settings name models of the default provider, not of one picked per call)."""
        if name == "extractive":
            return create_provider("extractive")
        service = CHAT_SERVICES[name]
        s = self.settings
        if model:
            models = {"model": model}
        elif name == self.resolve_provider(None):
            models = {"model": s.llm_model or service.default_model, "planner_model": s.planner_model,
                      "worker_model": s.worker_model, "synthesis_model": s.synthesis_model}
        else:
            models = {"model": service.default_model}
        api_key = "" if service.key_field == service.url_field else getattr(s, service.key_field)
        return create_provider(
            service.module, api_key=api_key, base_url=self.base_url(name), name=name, **models,
            request_timeout=s.llm_request_timeout, retry=self.retry, governor=self.governor(name),
            **dict(service.options),
        )

    async def warm_up(self) -> None:
        """Pay a worker's first-task costs when it starts, not inside a user's task: importing
        the default provider's SDK (about half a second for openai) and its first call's lazy
        work (answered in memory, Provider.warm_up), building or refreshing the local
        documents index, and the loop's HTTP pool with its TLS context."""
        # design: in a thread, so the import does not stall the worker loop that runs tasks
        provider = await asyncio.to_thread(self.provider, self.resolve_provider(None))
        await provider.warm_up()
        getattr(provider, "client", None)  # builds this loop's shared HTTP pool, where it has one
        await provider.aclose()
        local = self.sources.get("local")
        if local is not None and local.enabled:
            await local.search("warm up the index", 1)

    def base_url(self, name: str) -> str:
        service = CHAT_SERVICES[name]
        configured = getattr(self.settings, service.url_field, "") if service.url_field else ""
        if not configured:
            return service.base_url + service.url_suffix
        if "://" not in configured:
            configured = f"http://{configured}"  # OLLAMA_HOST is often written host:port
        return configured.rstrip("/") + service.url_suffix

    def governor(self, name: str) -> Governor:
        """The governor of provider `name` in this process (LLM_MAX_CONCURRENCY requests in flight)."""
        if name not in self._governors:
            self._governors[name] = Governor(self.settings.llm_max_concurrency)
        return self._governors[name]

    # -- sources --------------------------------------------------------------------

    @property
    def sources(self) -> dict[str, SearchSource]:
        """Every registered source, enabled or not, built once per process."""
        if self._sources is None:
            s = self.settings
            data_dir = Path(s.data_dir)
            # design: a network source is enabled only by its own setting (an URL, or a key whose
            # service has a public URL), so the embedded default never leaves the host.
            shared: dict[str, Any] = {"http": self.http, "cache": self.cache}
            self._sources = {
                "local": create_source("local", docs_dir=s.docs_dir, index_path=data_dir / "docs_index.db"),
                "web": create_source("web", searxng_url=s.searxng_url, brave_api_key=s.brave_api_key,
                                     brave_api_url=s.brave_api_url, **shared),
                "wikipedia": create_source("wikipedia", base_url=s.wikipedia_api_url, **shared),
                "arxiv": create_source("arxiv", base_url=s.arxiv_api_url, **shared),
                "semantic_scholar": create_source("semantic_scholar", base_url=s.semantic_scholar_api_url, **shared),
                "github": create_source("github", api_url=s.github_api_url, token=s.github_token, **shared),
                "hackernews": create_source("hackernews", base_url=s.hn_api_url, **shared),
            }
            for source in self._sources.values():
                source.on_error = self._share_source_error
        return self._sources

    async def _share_source_error(self, name: str, error: dict[str, Any]) -> None:
        await self.cache.set(self.SOURCE_ERROR_KEY.format(name), json.dumps(error), self.SOURCE_ERROR_TTL)

    def last_source_error(self, name: str) -> dict[str, Any] | None:
        """The latest failure of source `name` on any worker (this process's own when the
        store is out of reach or there is none)."""
        local = self.sources[name].last_error
        if self.store is None:
            return local
        try:
            shared = self.store.cache_get(self.SOURCE_ERROR_KEY.format(name))
        except self.store.unavailable_errors:
            return local
        found = json.loads(shared) if shared else None
        return max((e for e in (local, found) if e), key=lambda e: e["at"], default=None)

    def fetcher(self) -> PageFetcher:
        """The page reader of fetch_url and worker agents."""
        return PageFetcher(allow_private=self.settings.fetch_allow_private, user_agent=USER_AGENT)

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
