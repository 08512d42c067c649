"""The service's Flask class: Flask, with the answers of `ensure_sync` kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask

# Callables whose answer is kept at most; past it the answers are dropped all at once
# (per-request `after_this_request` functions would otherwise accumulate).
KEPT = 1024


class ServiceFlask(Flask):
    """design: Flask asks `ensure_sync` about every hook and view on every request, and each
    answer costs an `inspect.iscoroutinefunction`: with a dozen hooks, a few per cent of a
    cheap request. The registered callables do not change, so the answer is kept."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable, Callable] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        try:
            return self._sync[func]
        except KeyError:
            pass
        except TypeError:  # unhashable: asked every time, as Flask does
            return super().ensure_sync(func)
        if len(self._sync) >= KEPT:
            self._sync.clear()
        synced = self._sync[func] = super().ensure_sync(func)
        return synced
