"""Task routes: list, status, result, event log, cancel."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..schemas import EventsQuery, ListTasksInput
from ..security import require_scopes
from ..services import services
from . import json_body, load_query, owner, task_urls

bp = Blueprint("tasks", __name__)


@bp.get("/tasks")
def list_tasks():
    svc = services()
    args = load_query(ListTasksInput)
    tasks, cursor = svc.tasks.list(owner(), args["status"], args["orchestrator"], args["limit"], args["cursor"])
    return jsonify({"tasks": [svc.tasks.status(t, task_urls(svc.settings, t.task_id)) for t in tasks],
                    "next_cursor": cursor})


@bp.get("/tasks/<task_id>")
def task_status(task_id: str):
    svc = services()
    task = svc.tasks.get(task_id, owner())
    return jsonify(svc.tasks.status(task, task_urls(svc.settings, task_id)))


@bp.get("/tasks/<task_id>/result")
def task_result(task_id: str):
    return jsonify(services().tasks.result(task_id, owner()))


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str):
    args = load_query(EventsQuery)
    events = services().tasks.events(task_id, owner(), args["after"], args["limit"])
    return jsonify({"task_id": task_id, "events": [e.to_dict() for e in events],
                    "last_event_id": events[-1].id if events else args["after"]})


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str):
    svc = services()
    require_scopes(svc.settings, "orchestrate")
    json_body()  # refuse a malformed body, accept none
    task = svc.tasks.cancel(task_id, owner())
    return jsonify(svc.tasks.status(task, task_urls(svc.settings, task_id))), 202
