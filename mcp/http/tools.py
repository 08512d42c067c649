"""REST access to the tool registry: list tools, call any tool with a JSON object."""

from __future__ import annotations

from flask import Blueprint, jsonify

from ..services import services
from ..tools import ToolContext
from . import json_body, owner, task_urls

bp = Blueprint("tools", __name__)


@bp.get("/tools")
def list_tools():
    return jsonify({"tools": [t.describe() for t in services().tools.list()]})


@bp.post("/tools/<name>")
def call_tool(name: str):
    svc = services()
    tool = svc.tools.get(name)  # unknown tool: 404 before the body is looked at
    arguments = json_body()
    if tool.starts_task:
        svc.limits.hit_orchestrate()
    ctx = ToolContext(owner=owner(), urls=lambda task_id: task_urls(svc.settings, task_id))
    output = svc.tools.call(name, arguments, ctx)
    return jsonify(output.data), 202 if output.accepted else 200
