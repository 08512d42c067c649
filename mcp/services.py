"""The parts one worker's app is made of, kept on `app.extensions` so blueprints find them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from .catalog import Catalog
from .deadletter import DeadLetters
from .protocol import McpServer
from .ratelimit import RateLimits
from .runtime import TaskRuntime
from .settings import Settings
from .store import Store
from .streaming import StreamHub
from .tasks import TaskService
from .tools import ToolRegistry
from .webhooks import Webhooks

EXTENSION = "mcp_orchestrator"


@dataclass
class Services:
    settings: Settings
    store: Store
    catalog: Catalog
    hub: StreamHub
    runtime: TaskRuntime
    tasks: TaskService
    tools: ToolRegistry
    mcp: McpServer
    limits: RateLimits
    webhooks: Webhooks
    dead_letters: DeadLetters
    oauth: Any = None  # mcp.oauth.resource.ResourceServer when OAuth is configured
    started_at: float = field(default_factory=time.time)


def init_app(app: Flask, services: Services) -> None:
    app.extensions[EXTENSION] = services


def services() -> Services:
    return current_app.extensions[EXTENSION]
