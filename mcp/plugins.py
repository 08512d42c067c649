"""Tools from outside the service: Python entry points in the group `mcp_orchestrator.tools`
and modules named in TOOL_MODULES. Each plug-in is a callable `register_tools(registry,
settings)` (a module's attribute of that name, or the object an entry point names) that
registers `mcp.tools.Tool`s. A plug-in that fails to import or register is skipped and
reported in /health; it never stops a worker from starting."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .settings import Settings
from .tools import Tool, ToolRegistry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mcp_orchestrator.tools"
HOOK = "register_tools"


class _Scoped:
    """The registry as a plug-in sees it: it may add tools, not replace existing ones."""

    def __init__(self, registry: ToolRegistry):
        self.registry = registry
        self.added: list[Tool] = []

    def register(self, tool: Tool) -> None:
        if not isinstance(tool, Tool):
            raise TypeError(f"expected an mcp.tools.Tool, got {type(tool).__name__}")
        if tool.name in self.registry.names():
            raise ValueError(f"tool {tool.name!r} already exists")
        self.added.append(tool)


def _candidates(settings: Settings) -> list[tuple[str, str, Callable[[], Any]]]:
    """(kind, name, loader) of every configured plug-in, entry points first."""
    found: list[tuple[str, str, Callable[[], Any]]] = [
        ("entry_point", f"{ep.name} = {ep.value}", ep.load) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for module in settings.tool_modules:
        found.append(("module", module, lambda module=module: getattr(importlib.import_module(module), HOOK)))
    return found


def load_plugins(registry: ToolRegistry, settings: Settings) -> list[dict[str, Any]]:
    """Register every plug-in's tools; returns one report per plug-in for /health."""
    reports = []
    for kind, name, load in _candidates(settings):
        scoped = _Scoped(registry)
        try:
            hook = load()
            if not callable(hook):
                raise TypeError(f"{HOOK} is not callable")
            hook(scoped, settings)
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported and skipped, by design
            log.warning("plug-in %s failed to load: %s: %s", name, type(exc).__name__, exc)
            reports.append({"name": name, "kind": kind, "status": "error", "tools": [],
                            "error": f"{type(exc).__name__}: {exc}"})
            continue
        # design: tools are added only after the whole hook ran, so a hook failing halfway adds none.
        for tool in scoped.added:
            registry.register(tool)
        reports.append({"name": name, "kind": kind, "status": "ok", "tools": [t.name for t in scoped.added]})
    return reports
