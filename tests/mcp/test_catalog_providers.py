"""Which provider, base URL and models a task gets from the settings and its own inputs."""

from __future__ import annotations

import pytest

from mcp.catalog import CHAT_SERVICES, Catalog
from mcp.errors import ValidationError
from mcp.schemas import PROVIDER_NAMES
from mcp.settings import Settings


def catalog(**env: str) -> Catalog:
    return Catalog(Settings.from_env(env))


def test_every_provider_of_the_design_is_registered_with_its_real_default_base_url():
    assert set(PROVIDER_NAMES) == {"auto", "extractive", *CHAT_SERVICES}
    c = catalog()
    assert {name: c.base_url(name) for name in CHAT_SERVICES} == {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "xai": "https://api.x.ai/v1",
        "groq": "https://api.groq.com/openai/v1",
        "mistral": "https://api.mistral.ai/v1",
        "openrouter": "https://openrouter.ai/api/v1",
        "ollama": "http://127.0.0.1:11434/v1",
    }


def test_base_urls_are_overridden_by_their_settings():
    c = catalog(OPENAI_BASE_URL="http://127.0.0.1:9/v1", ANTHROPIC_BASE_URL="http://127.0.0.1:8/",
                OLLAMA_HOST="10.0.0.5:11434")
    assert (c.base_url("openai"), c.base_url("anthropic"), c.base_url("ollama")) == (
        "http://127.0.0.1:9/v1", "http://127.0.0.1:8", "http://10.0.0.5:11434/v1")


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "extractive"),
    ({"MISTRAL_API_KEY": "m", "GROQ_API_KEY": "g"}, "groq"),
    ({"OPENROUTER_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}, "anthropic"),
    ({"OLLAMA_HOST": "http://127.0.0.1:11434"}, "ollama"),
    ({"LLM_PROVIDER": "xai", "OPENAI_API_KEY": "k"}, "xai"),
])
def test_auto_picks_the_first_provider_with_a_key(env, expected):
    assert catalog(**env).resolve_provider(None) == expected


def test_a_requested_provider_must_be_configured():
    c = catalog(OPENAI_API_KEY="k")
    assert c.resolve_provider("openai") == "openai"
    with pytest.raises(ValidationError) as refused:
        c.resolve_provider("anthropic")
    assert refused.value.details == {"fields": {"provider": ["anthropic needs ANTHROPIC_API_KEY"]}}


def test_a_call_model_wins_and_role_models_belong_to_the_default_provider():
    c = catalog(OPENAI_API_KEY="k", ANTHROPIC_API_KEY="a", LLM_MODEL="gpt-4.1", PLANNER_MODEL="gpt-4o",
                SYNTHESIS_MODEL="gpt-4.1-mini")
    assert c.provider("openai").models == {"planner": "gpt-4o", "reviewer": "gpt-4o", "worker": "gpt-4.1",
                                           "synthesis": "gpt-4.1-mini"}
    assert set(c.provider("openai", "o3").models.values()) == {"o3"}
    assert set(c.provider("anthropic").models.values()) == {"claude-haiku-4-5"}
    assert set(c.provider("anthropic", "claude-sonnet-4-5").models.values()) == {"claude-sonnet-4-5"}


def test_one_governor_per_provider_per_process_sized_by_the_setting():
    c = catalog(OPENAI_API_KEY="k", ANTHROPIC_API_KEY="a", LLM_MAX_CONCURRENCY="3")
    first, second = c.provider("openai"), c.provider("openai")
    assert first.governor is second.governor and first.governor.limit == 3
    assert c.provider("anthropic").governor is not first.governor


def test_ollama_is_keyless_and_free():
    c = catalog(OLLAMA_HOST="http://127.0.0.1:11434")
    provider = c.provider("ollama")
    assert provider.account_prefix == "ollama/" and provider.json_mode == "json_object"
    assert c.prices.cost(provider.account_prefix + "llama3.2", 10**6, 10**6) == 0.0


def test_prices_find_dated_snapshots_and_vendor_prefixed_names():
    prices = catalog().prices
    assert prices.price("gpt-4o-mini-2024-07-18") == prices.price("gpt-4o-mini") != prices.price("gpt-4o")
    assert prices.price("openai/gpt-4o") == prices.price("gpt-4o")
    assert prices.price("claude-haiku-4-5-20251001") == (1.00, 5.00)
