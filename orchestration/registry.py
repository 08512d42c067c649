"""Registries by name (CONVENTIONS 5): a name maps to "module:Class", imported on first use."""

from __future__ import annotations

import importlib
from typing import Any


def build(registry: dict[str, str], name: str, /, **config: Any) -> Any:
    """An instance of the class registered as `name`, built with its configuration."""
    module_name, class_name = registry[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)(**config)
