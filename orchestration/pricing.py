"""Model prices in USD per million tokens, for cost accounting and budgets."""

from __future__ import annotations

import json
from pathlib import Path

# design: list prices of well-known models; MODEL_PRICES_FILE overrides or extends them.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "extractive": (0.0, 0.0),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "claude-3-5-haiku-latest": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
    "grok-3-mini": (0.30, 0.50),
    "llama-3.3-70b-versatile": (0.59, 0.79),
    "mistral-small-latest": (0.10, 0.30),
}
# Unknown models are priced like a mid-range model so budgets still bite.
FALLBACK_PRICE = (1.00, 3.00)


class PriceTable:
    def __init__(self, prices: dict[str, tuple[float, float]] | None = None):
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    @classmethod
    def load(cls, path: str | None) -> PriceTable:
        """Defaults, overridden by a JSON file `{"model": [input_per_m, output_per_m]}`."""
        table = cls()
        if path:
            for model, pair in json.loads(Path(path).read_text()).items():
                table.prices[model] = (float(pair[0]), float(pair[1]))
        return table

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        if model.startswith("ollama/") or model == "extractive":
            return 0.0
        per_in, per_out = self.price(model)
        return (input_tokens * per_in + output_tokens * per_out) / 1_000_000

    def price(self, model: str) -> tuple[float, float]:
        """The entry for `model` (without an OpenRouter `vendor/` prefix), else for the longest
        listed name it starts with (servers answer with dated snapshots such as
        `gpt-4o-mini-2024-07-18`), else the fallback."""
        if model in self.prices:
            return self.prices[model]
        if "/" in model:  # OpenRouter's vendor/model names
            return self.price(model.split("/", 1)[1])
        prefixes = [name for name in self.prices if model.startswith(name + "-")]
        return self.prices[max(prefixes, key=len)] if prefixes else FALLBACK_PRICE
