"""The status and result documents of DESIGN §7, built from a task record and an outcome."""

from __future__ import annotations

from typing import Any

from orchestration.models import Outcome, to_dict

from .store import TaskRecord

ID_PREFIX = {"research": "research_", "search": "search_"}


def result_document(task: TaskRecord, status: str, outcome: Outcome | None, completed_at: float,
                    error: str | None) -> dict[str, Any]:
    outcome = outcome or Outcome()
    body = to_dict(outcome)
    started = task.started_at or task.created_at
    return {
        "task_id": task.task_id,
        "orchestrator": task.orchestrator,
        "status": status,
        "query": task.query,
        "title": task.title,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": completed_at,
        "execution_time": round(max(0.0, completed_at - started), 3),
        "subtasks": body["subtasks"],
        "agent_results": [public_agent_result(r) for r in body["agent_results"]],
        "synthesis_results": [{k: v for k, v in s.items() if k != "usage"} for s in body["synthesis_results"]],
        "final_synthesis": body["final_synthesis"],
        "sources": body["sources"],
        "usage": body["usage"],
        "budget": body["budget"],
        "partial": body["partial"],
        "citations": body["citations"],
        "error": error or body["error"],
    }


# design: what the model was told at each step and its tool-call id are kept in the step
# checkpoints to replay the conversation on resume; the result shows what each step did.
STEP_REPLAY_FIELDS = ("result", "call_id")


def public_agent_result(result: dict[str, Any]) -> dict[str, Any]:
    steps = [{k: v for k, v in step.items() if k not in STEP_REPLAY_FIELDS} for step in result.get("steps", [])]
    return {**result, "steps": steps}


def status_document(task: TaskRecord, last_event_id: int, urls: dict[str, str]) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "orchestrator": task.orchestrator,
        "status": task.status,
        "query": task.query,
        "title": task.title,
        "progress": task.progress,
        "created_at": task.created_at,
        "started_at": task.started_at,
        "completed_at": task.completed_at,
        "error": task.error,
        "worker": task.worker,
        "attempts": task.attempts,
        "cancel_requested": task.cancel_requested,
        "last_event_id": last_event_id,
        **urls,
    }
