"""Settings are declared once; .env.example and the README list exactly those variables."""

from __future__ import annotations

import re
from pathlib import Path

from mcp.settings import Settings, env_example, env_table

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_is_generated_from_settings():
    assert (ROOT / ".env.example").read_text() == env_example(), "run: python -m mcp.settings > .env.example"


def test_readme_documents_every_variable():
    readme = (ROOT / "README.md").read_text()
    missing = [env for env, _, _ in env_table() if f"`{env}`" not in readme]
    assert not missing


def test_values_are_parsed_by_type_and_defaults_need_nothing():
    s = Settings.from_env({"PORT": "7000", "API_KEYS": "a, b", "RATE_LIMIT_ENABLED": "0", "LEASE_TTL": "2.5"})
    assert (s.port, s.api_keys, s.rate_limit_enabled, s.lease_ttl) == (7000, ("a", "b"), False, 2.5)
    d = Settings.from_env({})
    assert d.bind_address == "127.0.0.1" and d.port == 5060 and d.workers == 4
    assert (d.threads, d.stream_reserve_threads) == (160, 16)
    assert re.match(r"sqlite:///.+/orchestrator\.db$", d.resolved_store_url)


def test_preflight_uses_the_stream_defaults_of_settings():
    text = (ROOT / "preflight.sh").read_text()
    d = Settings.from_env({})
    for env, value in (("THREADS", d.threads), ("STREAM_RESERVE_THREADS", d.stream_reserve_threads),
                       ("MAX_STREAMS", d.max_streams)):
        assert f"${{{env}:-{value}}}" in text, env
