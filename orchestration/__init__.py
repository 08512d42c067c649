"""The pure async domain: models, orchestrators, providers, sources and ranking.

Nothing here imports Flask, gunicorn or the `mcp` service package (DESIGN §2)."""

# The seed review's names for the two orchestrators, resolved on first use so that importing
# the package stays light: `from orchestration import SwarmOrchestrator, BeltalowdaOrchestrator`.
HISTORICAL_NAMES = {
    "SwarmOrchestrator": ("orchestration.search", "SearchOrchestrator"),
    "BeltalowdaOrchestrator": ("orchestration.research", "ResearchOrchestrator"),
}


def __getattr__(name: str):
    if name in HISTORICAL_NAMES:
        import importlib

        module, attr = HISTORICAL_NAMES[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'orchestration' has no attribute {name!r}")
