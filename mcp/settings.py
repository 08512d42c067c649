"""Every environment variable the service reads, declared once (CONVENTIONS 2).

Each field carries its variable name, default and a one-line doc; `.env.example` and the
README table are checked against this list by tests/mcp/test_settings.py."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def setting(env: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    # Server
    port: int = setting("PORT", 5060, "TCP port gunicorn binds.")
    bind_address: str = setting("BIND_ADDRESS", "127.0.0.1", "Address gunicorn binds; non-loopback needs API keys.")
    workers: int = setting("WORKERS", 4, "Gunicorn worker processes.")
    threads: int = setting("THREADS", 160, "Request threads per worker (gthread); streams per worker are "
                           "at most THREADS - STREAM_RESERVE_THREADS (a caught-up task stream "
                           "moves to the fan-out thread and frees its thread).")
    timeout: int = setting("TIMEOUT", 300, "Gunicorn worker timeout in seconds.")
    graceful_timeout: int = setting("GRACEFUL_TIMEOUT", 30, "Seconds a stopping worker gets to finish.")
    max_requests: int = setting("MAX_REQUESTS", 50000, "Requests after which a worker is recycled (a leak guard).")
    max_requests_jitter: int = setting("MAX_REQUESTS_JITTER", 5000, "Random spread of MAX_REQUESTS.")
    log_level: str = setting("LOG_LEVEL", "info", "Log level: debug, info, warning, error.")
    log_format: str = setting("LOG_FORMAT", "json", "Log format: json (one object a line) or text.")
    skip_pip_install: bool = setting("SKIP_PIP_INSTALL", False, "start.sh: never run pip.")
    venv_dir: str = setting("VENV_DIR", "venv", "start.sh: the virtual environment's directory.")
    data_dir: str = setting("DATA_DIR", "./data", "Where the SQLite store and indexes live.")
    store_url: str = setting("STORE_URL", "", "Store backend: sqlite:///path or redis://host:port/db.")
    # Security
    api_keys: tuple[str, ...] = setting("API_KEYS", (), "Comma-separated API keys (name:key or key).")
    api_keys_file: str = setting("API_KEYS_FILE", "", "File of name:sha256hex lines.")
    admin_keys: tuple[str, ...] = setting("ADMIN_KEYS", (), "Comma-separated admin keys (name:key or key): "
                                          "keys that also see every key's dead-letter entries.")
    oauth_issuer: str = setting("OAUTH_ISSUER", "", "OAuth authorization server whose access tokens are accepted "
                                "(its RFC 8414 or OpenID metadata names the JWKS); with OAUTH_BUILTIN=1 the "
                                "built-in server's issuer (default: this service's public URL).")
    oauth_audience: str = setting("OAUTH_AUDIENCE", "", "Audience access tokens must name (RFC 8707 resource); "
                                  "default: the public MCP URL.")
    oauth_scopes: str = setting("OAUTH_SCOPES", "orchestrate read", "Scopes advertised: orchestrate (start and "
                                "cancel tasks), read (everything else).")
    oauth_client_id: str = setting("OAUTH_CLIENT_ID", "", "This service's client at OAUTH_ISSUER, to introspect "
                                   "opaque access tokens (RFC 7662); JWTs need none.")
    oauth_client_secret: str = setting("OAUTH_CLIENT_SECRET", "", "Secret of OAUTH_CLIENT_ID.")
    oauth_builtin: bool = setting("OAUTH_BUILTIN", False, "Run the built-in OAuth 2.1 authorization server "
                                  "(the operator signs clients in with an API key).")
    oauth_access_token_ttl: str = setting("OAUTH_ACCESS_TOKEN_TTL", "1h", "Lifetime of the built-in server's "
                                          "access tokens (refresh tokens last 30 days, rotated on use).")
    cors_origins: tuple[str, ...] = setting("CORS_ORIGINS", (), "Origins allowed by CORS.")
    allowed_origins: tuple[str, ...] = setting("ALLOWED_ORIGINS", (), "Origins allowed on the MCP endpoint.")
    allowed_hosts: tuple[str, ...] = setting("ALLOWED_HOSTS", (), "Host headers accepted (beyond loopback names).")
    trusted_proxies: int = setting("TRUSTED_PROXIES", 0, "X-Forwarded-For hops to trust (1 behind Caddy).")
    public_base_path: str = setting("PUBLIC_BASE_PATH", "", "Public path prefix such as /mcp.")
    max_content_length: int = setting("MAX_CONTENT_LENGTH", 1048576, "Largest request body in bytes.")
    rate_limit_enabled: bool = setting("RATE_LIMIT_ENABLED", True, "Apply rate limits.")
    rate_limit_default: str = setting("RATE_LIMIT_DEFAULT", "600 per minute", "Limit per key or IP.")
    rate_limit_orchestrate: str = setting("RATE_LIMIT_ORCHESTRATE", "5 per minute", "Limit on starting tasks.")
    # Runtime
    max_concurrent_tasks: int = setting("MAX_CONCURRENT_TASKS", 8, "Tasks one worker runs at once.")
    max_streams: int = setting("MAX_STREAMS", 200, "SSE streams one worker serves at once, and at most "
                               "THREADS - STREAM_RESERVE_THREADS; more get 503 with Retry-After.")
    stream_reserve_threads: int = setting("STREAM_RESERVE_THREADS", 16, "Threads per worker that streams never "
                                          "take: kept for /health and every other request.")
    lease_ttl: float = setting("LEASE_TTL", 15.0, "Seconds a task lease lasts without renewal.")
    task_scan_interval: float = setting("TASK_SCAN_INTERVAL", 2.0, "Seconds between scans for orphaned tasks.")
    stream_keepalive: float = setting("STREAM_KEEPALIVE", 15.0, "Seconds between SSE keep-alive comments.")
    # Retention
    task_retention: str = setting("TASK_RETENTION", "30d", "How long a finished task is kept with its events, "
                                  "result and documents (30d, 12h, 90m, 45s); 0 keeps tasks forever.")
    max_tasks_per_key: int = setting("MAX_TASKS_PER_KEY", 0, "Finished tasks kept per API key at most, the "
                                     "oldest removed first; 0 = no cap.")
    session_ttl: str = setting("SESSION_TTL", "24h", "How long an idle MCP session is kept.")
    sweep_interval: float = setting("SWEEP_INTERVAL", 60.0, "Seconds between retention sweeps (one worker "
                                    "at a time sweeps).")
    # Providers
    llm_provider: str = setting("LLM_PROVIDER", "auto", "auto, extractive, openai, anthropic, xai, groq, ...")
    llm_model: str = setting("LLM_MODEL", "", "Default model of the provider.")
    planner_model: str = setting("PLANNER_MODEL", "", "Model for the planner.")
    worker_model: str = setting("WORKER_MODEL", "", "Model for worker agents.")
    synthesis_model: str = setting("SYNTHESIS_MODEL", "", "Model for synthesizers.")
    openai_api_key: str = setting("OPENAI_API_KEY", "", "OpenAI key.")
    openai_base_url: str = setting("OPENAI_BASE_URL", "", "OpenAI-compatible base URL override.")
    anthropic_api_key: str = setting("ANTHROPIC_API_KEY", "", "Anthropic key.")
    anthropic_base_url: str = setting("ANTHROPIC_BASE_URL", "", "Anthropic base URL override.")
    xai_api_key: str = setting("XAI_API_KEY", "", "xAI key.")
    groq_api_key: str = setting("GROQ_API_KEY", "", "Groq key.")
    mistral_api_key: str = setting("MISTRAL_API_KEY", "", "Mistral key.")
    openrouter_api_key: str = setting("OPENROUTER_API_KEY", "", "OpenRouter key.")
    ollama_host: str = setting("OLLAMA_HOST", "", "Ollama server, e.g. http://127.0.0.1:11434.")
    model_prices_file: str = setting("MODEL_PRICES_FILE", "", "JSON price table overriding the defaults.")
    llm_max_concurrency: int = setting("LLM_MAX_CONCURRENCY", 8, "Requests one worker process has in flight "
                                       "to one provider at most, over all its tasks.")
    llm_max_attempts: int = setting("LLM_MAX_ATTEMPTS", 4, "Tries of one provider call on 429, 5xx or a "
                                    "connection error (1 = no retry).")
    llm_retry_max_seconds: float = setting("LLM_RETRY_MAX_SECONDS", 60.0, "No retry of a provider call is "
                                           "started whose wait would end later than this after its first try.")
    llm_request_timeout: float = setting("LLM_REQUEST_TIMEOUT", 120.0, "Seconds one provider request may "
                                         "wait to connect or for its next bytes.")
    # Sources
    docs_dir: str = setting("DOCS_DIR", "./docs", "Directory the local documents source indexes.")
    wikipedia_api_url: str = setting("WIKIPEDIA_API_URL", "", "MediaWiki Action API URL; empty disables wikipedia.")
    arxiv_api_url: str = setting("ARXIV_API_URL", "", "arXiv Atom API URL; empty disables arxiv.")
    searxng_url: str = setting("SEARXNG_URL", "", "SearXNG instance (JSON format enabled) for the web source.")
    brave_api_key: str = setting("BRAVE_API_KEY", "", "Brave Search API key; enables the web source.")
    brave_api_url: str = setting("BRAVE_API_URL", "", "Brave Search API URL (default: the public one).")
    github_token: str = setting("GITHUB_TOKEN", "", "GitHub token; enables github on api.github.com.")
    github_api_url: str = setting("GITHUB_API_URL", "", "GitHub REST API URL; enables github.")
    hn_api_url: str = setting("HN_API_URL", "", "Hacker News Algolia API URL; empty disables hackernews.")
    semantic_scholar_api_url: str = setting("SEMANTIC_SCHOLAR_API_URL", "",
                                            "Semantic Scholar Graph API URL; empty disables it.")
    fetch_allow_private: bool = setting("FETCH_ALLOW_PRIVATE", False, "Let fetch_url reach non-public addresses.")
    agent_read_pages: int = setting("AGENT_READ_PAGES", 2, "Web results each research agent reads in full "
                                    "(through fetch_url's guards); 0 keeps to snippets and turns "
                                    "the agents' read step off.")
    tool_modules: tuple[str, ...] = setting("TOOL_MODULES", (), "Modules whose register_tools() adds tools.")
    # Webhooks and observability
    webhook_secret: str = setting("WEBHOOK_SECRET", "", "Default HMAC secret for webhook signatures.")
    webhook_allow_private: bool = setting("WEBHOOK_ALLOW_PRIVATE", False, "Allow webhooks to private addresses.")
    alert_webhook_url: str = setting("ALERT_WEBHOOK_URL", "", "URL told of each new dead-letter entry and "
                                     "each rate-limit breach (signed like webhooks); empty: nobody.")
    alert_webhook_secret: str = setting("ALERT_WEBHOOK_SECRET", "", "HMAC secret of alert notifications "
                                        "(default WEBHOOK_SECRET).")
    webhook_retry_base: float = setting("WEBHOOK_RETRY_BASE", 5.0, "Seconds before a failed webhook is retried "
                                        "(doubling after each failure, 8 attempts).")
    sentry_dsn: str = setting("SENTRY_DSN", "", "Sentry DSN; empty disables Sentry.")
    sentry_environment: str = setting("SENTRY_ENVIRONMENT", "production", "Sentry environment name.")
    sentry_traces_sample_rate: float = setting("SENTRY_TRACES_SAMPLE_RATE", 0.0, "Sentry traces sample rate.")
    metrics_enabled: bool = setting("METRICS_ENABLED", True, "Serve /metrics.")
    prometheus_multiproc_dir: str = setting("PROMETHEUS_MULTIPROC_DIR", "", "Prometheus multiprocess directory.")

    def __post_init__(self) -> None:
        # a bad duration fails when the settings are read, naming its variable
        parse_duration(self.task_retention, "TASK_RETENTION")
        parse_duration(self.session_ttl, "SESSION_TTL")
        parse_duration(self.oauth_access_token_ttl, "OAUTH_ACCESS_TOKEN_TTL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None,
                 **overrides: Any) -> Settings:
        """Settings from the environment (or `environ`), plus the variables of `env_file` (a
        .env, read by mcp/envfile.py) that the environment does not set, then `overrides` by
        field name. A value that is not of its variable's type raises SettingsError naming it."""
        environ = os.environ if environ is None else environ
        if env_file is not None:
            from .envfile import merged

            environ = merged(env_file, environ)
        values: dict[str, Any] = {}
        errors: list[str] = []
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None and raw != "":
                try:
                    values[f.name] = _parse(raw, f.default)
                except ValueError as exc:
                    errors.append(f"{f.metadata['env']}={raw!r}: {exc}")
        if errors:
            raise SettingsError("; ".join(errors))
        values.update(overrides)
        return cls(**values)

    def problems(self) -> list[str]:
        """What is wrong with these settings beyond their types (ranges, a store path that
        cannot exist), one message per variable; empty when nothing is."""
        found = []
        if not 1 <= self.port <= 65535:
            found.append(f"PORT={self.port}: must be between 1 and 65535")
        for env, value in (("WORKERS", self.workers), ("THREADS", self.threads), ("TIMEOUT", self.timeout),
                           ("MAX_CONCURRENT_TASKS", self.max_concurrent_tasks), ("MAX_STREAMS", self.max_streams),
                           ("LLM_MAX_CONCURRENCY", self.llm_max_concurrency),
                           ("LLM_MAX_ATTEMPTS", self.llm_max_attempts)):
            if value < 1:
                found.append(f"{env}={value}: must be at least 1")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            found.append(f"LOG_LEVEL={self.log_level}: use debug, info, warning or error")
        if self.log_format not in ("json", "text"):
            found.append(f"LOG_FORMAT={self.log_format}: use json or text")
        url = self.resolved_store_url
        if url.startswith("sqlite:///"):
            blocker = _not_a_directory(Path(url[len("sqlite:///"):]).parent)
            if blocker:
                found.append(f"STORE_URL={url}: {blocker} is a file, not a directory")
        elif not url.startswith("redis://"):
            found.append(f"STORE_URL={url}: use sqlite:///path or redis://host:port/db")
        blocker = _not_a_directory(Path(self.data_dir))
        if blocker:
            found.append(f"DATA_DIR={self.data_dir}: {blocker} is a file, not a directory")
        return found

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{Path(self.data_dir).resolve() / 'orchestrator.db'}"

    @property
    def task_retention_seconds(self) -> float | None:
        """TASK_RETENTION in seconds; None keeps finished tasks forever."""
        seconds = parse_duration(self.task_retention, "TASK_RETENTION")
        return seconds or None

    @functools.cached_property
    def session_ttl_seconds(self) -> float:
        # parsed once: an MCP call reads it twice (design: cached_property writes the
        # instance's __dict__ directly, which a frozen dataclass allows)
        return parse_duration(self.session_ttl, "SESSION_TTL") or DEFAULT_SESSION_TTL

    @property
    def oauth_enabled(self) -> bool:
        """Bearer access tokens are accepted (an external issuer or the built-in server)."""
        return bool(self.oauth_issuer or self.oauth_builtin)

    @property
    def oauth_access_token_ttl_seconds(self) -> float:
        return parse_duration(self.oauth_access_token_ttl, "OAUTH_ACCESS_TOKEN_TTL") or 3600.0

    @property
    def oauth_scope_list(self) -> tuple[str, ...]:
        return tuple(s for s in self.oauth_scopes.replace(",", " ").split() if s)

    @property
    def is_loopback_bind(self) -> bool:
        return self.bind_address in ("127.0.0.1", "::1", "localhost") or self.bind_address.startswith("127.")


class SettingsError(ValueError):
    """A variable whose value is not of its type; the message names the variable."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        word = raw.strip().lower()
        if word not in _TRUE + _FALSE:
            raise ValueError(f"expected a boolean ({'/'.join(_TRUE)} or {'/'.join(_FALSE)})")
        return word in _TRUE
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    if isinstance(default, tuple):
        return _split(raw)
    return raw


def _not_a_directory(path: Path) -> Path | None:
    """The first existing ancestor-or-self of `path` that is not a directory, if any."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_SESSION_TTL = 24 * 3600.0


def parse_duration(raw: str, env: str) -> float:
    """`30d`, `12h`, `90m`, `45s`, `1.5h` or plain seconds; raises ValueError naming `env`."""
    text = raw.strip().lower()
    number, unit = text.rstrip("smhdw"), text[len(text.rstrip("smhdw")):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in DURATION_UNITS or value < 0 or value != value:
        raise ValueError(f"{env}={raw!r} is not a duration such as 30d, 12h, 90m, 45s or 0")
    return value * DURATION_UNITS[unit]


def env_table() -> list[tuple[str, Any, str]]:
    """(variable, default, doc) for every setting, in declaration order."""
    return [(f.metadata["env"], f.default, f.metadata["doc"]) for f in fields(Settings)]


def env_example() -> str:
    """The text of `.env.example`: every variable, commented out at its default."""
    lines = ["# mcp-orchestrator configuration. Every variable is optional; the values shown are the",
             "# defaults. Copy to .env (read by start.sh, preflight.sh and service_manager.py; the",
             "# syntax is in docs/configuration.md) and uncomment what you change.", ""]
    for env, default, doc in env_table():
        value = ",".join(default) if isinstance(default, tuple) else default
        value = str(value).lower() if isinstance(default, bool) else value
        lines.append(f"# {doc}")
        lines.append(f"# {env}={value}")
    return "\n".join(lines) + "\n"


def check(env_file: str | Path) -> int:
    """Print every problem of the settings the service would get (environment + `env_file`),
    one line each; 0 when there is none. preflight.sh and start.sh run this."""
    import sys

    try:
        problems = Settings.from_env(env_file=env_file).problems()
    except ValueError as exc:  # SettingsError and EnvFileError name what is wrong
        problems = [str(exc)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--check"]:
        sys.exit(check(sys.argv[2] if len(sys.argv) > 2 else ".env"))
    print(env_example(), end="")
