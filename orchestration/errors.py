"""The few exceptions domain code raises; mcp.errors maps them to HTTP and JSON-RPC."""


class OrchestrationError(Exception):
    """Base class of domain errors."""


class BudgetExhausted(OrchestrationError):
    """A call would cross the task's max_cost_usd or max_tokens."""


class ProviderError(OrchestrationError):
    """A provider failed in a way retrying will not fix (bad key, bad model, ...)."""


class UnusableAnswer(ProviderError):
    """The provider answered, but with something that cannot be read (not JSON, a wrong
    shape, a stream cut short): the step it served degrades instead of failing the task."""


class SourceError(OrchestrationError):
    """A search source failed for one query: its API was out of reach, refused, or answered
    something other than what it documents (wrong shape, an HTML error page, a cut-off body).
    The message starts with the source's name and says what was wrong."""


class Interrupted(Exception):
    """The run cannot go on in this process: the task's event log or checkpoints are out of
    reach (the store is down). Neither the task's fault nor an agent's, so it is never turned
    into a failed agent or a failed task; the runtime leaves the task to be resumed from its
    checkpoints once the store is back. Deliberately not an OrchestrationError."""
