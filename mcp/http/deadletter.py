"""The dead-letter list over HTTP (DESIGN §13, issue 16): list, retry, dismiss."""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify

from ..errors import ValidationError
from ..schemas import ListDeadLettersInput
from ..services import services
from . import json_body, load_query, owner, task_urls

bp = Blueprint("deadletter", __name__)


def admin() -> bool:
    return bool(getattr(g, "api_key_is_admin", False))


@bp.get("/dead-letter")
def list_entries():
    args = load_query(ListDeadLettersInput)
    try:
        entries, cursor = services().dead_letters.list(owner(), admin(), args["kind"], args["limit"], args["cursor"])
    except ValueError:
        raise ValidationError("cursor is not one this service issued",
                              {"fields": {"cursor": ["invalid cursor"]}}) from None
    return jsonify({"entries": entries, "next_cursor": cursor})


@bp.get("/dead-letter/<entry_id>")
def get_entry(entry_id: str):
    return jsonify(services().dead_letters.get(entry_id, owner(), admin()))


@bp.post("/dead-letter/<entry_id>/retry")
def retry(entry_id: str):
    svc = services()
    json_body()  # refuse a malformed body, accept none
    entry = svc.dead_letters.retry(entry_id, owner(), admin())
    body = {"id": entry_id, "kind": entry["kind"], "ref": entry["ref"], "status": "retrying"}
    if entry["kind"] == "task":
        svc.runtime.resume(entry["ref"])
        body.update(task_urls(svc.settings, entry["ref"]))
    return jsonify(body), 202


@bp.delete("/dead-letter/<entry_id>")
def dismiss(entry_id: str):
    services().dead_letters.dismiss(entry_id, owner(), admin())
    return Response(status=204)
