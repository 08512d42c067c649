"""What an orchestrator writes to, kept in memory for the tests to read: its events and its
checkpoints (the runtime's EventWriter and CheckpointStore in the service)."""

from __future__ import annotations

import json
from typing import Any


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any], str | None]] = []

    async def emit(self, event_type: str, data: dict[str, Any] | None = None, agent_id: str | None = None,
                   progress: float | None = None) -> None:
        self.log.append((event_type, data or {}, agent_id))

    def entries(self, event_type: str) -> list[tuple[str, dict[str, Any], str | None]]:
        """(type, data, agent id) of each event of `event_type`, in order."""
        return [e for e in self.log if e[0] == event_type]

    def of(self, event_type: str) -> list[dict[str, Any]]:
        """The data of each event of `event_type`, in order."""
        return [data for _, data, _ in self.entries(event_type)]


class Checkpoints:
    """In memory, JSON round-tripped as a store would keep them."""

    def __init__(self) -> None:
        self.saved: dict[str, Any] = {}

    async def load(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.saved))

    async def save(self, key: str, value: Any) -> None:
        self.saved[key] = json.loads(json.dumps(value))
