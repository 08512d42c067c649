"""What a running task has so far, as a result document (for `?partial=1`), built from its
checkpoints in the store: the worker running the task may be another process or host, so
its orchestrator's memory is out of reach; its finished agents are not."""

from __future__ import annotations

import re
import time
from typing import Any

from orchestration.citations import evidence_for, number_sources, verify_citations
from orchestration.models import AgentResult, to_dict

from ..store import TaskRecord

_NUMBER = re.compile(r"(\d+)$")


def _order(key: str) -> tuple[int, str]:
    match = _NUMBER.search(key)
    return (int(match.group(1)) if match else 0, key)


def snapshot_result(task: TaskRecord, saved: dict[str, Any]) -> dict[str, Any]:
    agents = []
    for key in sorted((k for k in saved if k.startswith("agent:")), key=_order):
        value = saved[key]
        data = value.get("result", value) if isinstance(value, dict) else None
        try:
            result = AgentResult.from_dict(data)
        except (KeyError, TypeError, ValueError):
            continue  # a checkpoint shape this snapshot does not know is left out, not fatal
        if result.status == "completed":
            agents.append(result)
    sources, rewritten = number_sources(agents)
    labels = {s.get("subtask_id"): s.get("title") for s in saved.get("plan") or [] if isinstance(s, dict)}
    body = "\n\n".join(f"### {labels.get(r.subtask_id) or r.subtask_id}\n\n{rewritten[r.agent_id]}" for r in agents)
    evidence: dict[str, str] = {}
    for key, value in saved.items():
        if key.startswith("evidence:") and isinstance(value, dict):
            evidence.update({str(k): str(v) for k, v in value.items()})
    body, citations = verify_citations(body, evidence_for(sources, evidence))
    started = task.started_at or task.created_at
    return {
        "task_id": task.task_id, "orchestrator": task.orchestrator, "status": task.status, "query": task.query,
        "title": task.title, "created_at": task.created_at, "started_at": task.started_at, "completed_at": None,
        "execution_time": round(max(0.0, time.time() - started), 3),
        "final_synthesis": "## Findings so far\n\n" + (body or "_No agent has finished yet._"),
        "sources": [to_dict(s) for s in sources], "usage": saved.get("usage") or {}, "budget": {},
        "partial": True, "citations": citations, "error": None,
    }
