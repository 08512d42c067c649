"""The few exceptions domain code raises; mcp.errors maps them to HTTP and JSON-RPC."""


class OrchestrationError(Exception):
    """Base class of domain errors."""


class BudgetExhausted(OrchestrationError):
    """A call would cross the task's max_cost_usd or max_tokens."""


class ProviderError(OrchestrationError):
    """A provider failed in a way retrying will not fix (bad key, bad model, ...)."""


class SourceError(OrchestrationError):
    """A search source failed for one query."""
